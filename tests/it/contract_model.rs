//! Property test over random valid and invalid command sequences through the real handler and a
//! real log, with late (backdated) entries and reversals: R12 conservation and no negative balance
//! after every command; the year's SAB billable total equals `max(0, committed − net converted)`
//! after every command once assessed (R9, R11); `balance --as-of T` is never negative for any T
//! (R12, R13); monthly statements tile the year (every line in exactly one month, each closing the
//! next opening, the months' quantity and money movements adding up to the year's); the warm state
//! equals a fold of the log from scratch; a rejection leaves the log untouched; resubmitting every
//! command (same ids) appends nothing. Failing cases shrink and are kept by proptest in
//! `proptest-regressions/`.

use std::sync::Arc;

use commands::Handler;
use proptest::prelude::*;
use rust_decimal::Decimal;
use schemas::{Bucket, CommandEnvelope};

#[derive(Debug, Clone)]
enum Step {
    BuyCredits {
        day: u32,
        quantity: u32,
    },
    BuyDse {
        day: u32,
        hundredths: u32,
    },
    Convert {
        booking: u8,
        day: u32,
        lead_days: u32,
        half: bool,
        quantity: u32,
    },
    Cancel {
        booking: u8,
        day: u32,
    },
    Reschedule {
        booking: u8,
        day: u32,
        lead_days: u32,
    },
    Consume {
        day: u32,
        hour: u32,
        minutes: u32,
    },
    Sab {
        day: u32,
        incidents: u32,
    },
    Reverse {
        pick: usize,
    },
    Tick {
        day: u32,
    },
    Terminate {
        day: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u32..365, 0u32..60).prop_map(|(day, quantity)| Step::BuyCredits { day, quantity }),
        2 => (0u32..365, 0u32..5000).prop_map(|(day, hundredths)| Step::BuyDse { day, hundredths }),
        4 => (0u8..6, 0u32..365, 0u32..40, any::<bool>(), 0u32..12).prop_map(|(booking, day, lead_days, half, quantity)| Step::Convert { booking, day, lead_days, half, quantity }),
        2 => (0u8..6, 0u32..365).prop_map(|(booking, day)| Step::Cancel { booking, day }),
        1 => (0u8..6, 0u32..365, 0u32..40).prop_map(|(booking, day, lead_days)| Step::Reschedule { booking, day, lead_days }),
        4 => (0u32..365, 7u32..19, 1u32..400).prop_map(|(day, hour, minutes)| Step::Consume { day, hour, minutes }),
        1 => (0u32..365, 0u32..8).prop_map(|(day, incidents)| Step::Sab { day, incidents }),
        2 => (0usize..64).prop_map(|pick| Step::Reverse { pick }),
        1 => (0u32..400).prop_map(|day| Step::Tick { day }),
        1 => (0u32..365).prop_map(|day| Step::Terminate { day }),
    ]
}

fn day(offset: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(u64::from(offset))
}

fn time(offset: u32, hour: u32) -> String {
    format!("{}T{hour:02}:00:00Z", day(offset))
}

/// The command JSON for a step (with a unique command id), or a tick time.
fn render(step: &Step, index: usize, accepted_events: &[String]) -> Result<String, String> {
    let id = format!("cmd-{index}");
    Ok(match step {
        Step::BuyCredits { day, quantity } => format!(
            r#"{{"type":"purchase","command_id":"{id}","contract_id":"C-1","item":"proactive_credits","quantity":"{quantity}","unit_price":"{}.50","effective_at":"{}"}}"#,
            200 + day % 7,
            time(*day, 0)
        ),
        Step::BuyDse { day, hundredths } => format!(
            r#"{{"type":"purchase","command_id":"{id}","contract_id":"C-1","item":"dse_hours","quantity":"{}","unit_price":"180.00","effective_at":"{}"}}"#,
            Decimal::new(i64::from(*hundredths), 2),
            time(*day, 1)
        ),
        Step::Convert {
            booking,
            day,
            lead_days,
            half,
            quantity,
        } => format!(
            r#"{{"type":"convert_credits","command_id":"{id}","contract_id":"C-1","booking_id":"B-{booking}","service":"{}","quantity":"{quantity}","starts_at":"{}","effective_at":"{}"}}"#,
            if *half { "HALF" } else { "WS" },
            time(day + lead_days, 9),
            time(*day, 8)
        ),
        Step::Cancel { booking, day } => format!(
            r#"{{"type":"cancel_booking","command_id":"{id}","contract_id":"C-1","booking_id":"B-{booking}","effective_at":"{}"}}"#,
            time(*day, 10)
        ),
        Step::Reschedule {
            booking,
            day,
            lead_days,
        } => format!(
            r#"{{"type":"reschedule_booking","command_id":"{id}","contract_id":"C-1","booking_id":"B-{booking}","starts_at":"{}","effective_at":"{}"}}"#,
            time(day + lead_days, 11),
            time(*day, 10)
        ),
        Step::Consume { day, hour, minutes } => {
            let start = chrono::NaiveDateTime::new(
                day_of(*day),
                chrono::NaiveTime::from_hms_opt(*hour, 0, 0).unwrap(),
            );
            let end = start + chrono::Duration::minutes(i64::from(*minutes));
            format!(
                r#"{{"type":"consume_hours","command_id":"{id}","contract_id":"C-1","bucket":"dse_hours","started_at":"{}Z","ended_at":"{}Z"}}"#,
                start.format("%Y-%m-%dT%H:%M:%S"),
                end.format("%Y-%m-%dT%H:%M:%S")
            )
        }
        Step::Sab { day, incidents } => format!(
            r#"{{"type":"convert_sab","command_id":"{id}","contract_id":"C-1","incidents":{incidents},"value_per_incident":"500.00","applied_to":"dse","effective_at":"{}"}}"#,
            time(*day, 12)
        ),
        Step::Reverse { pick } => {
            let Some(event_id) = accepted_events.get(pick % accepted_events.len().max(1)) else {
                return Err("nothing to reverse yet".into());
            };
            format!(
                r#"{{"type":"reverse","command_id":"{id}","contract_id":"C-1","event_id":"{event_id}","reason":"property test"}}"#
            )
        }
        Step::Terminate { day } => format!(
            r#"{{"type":"terminate_contract","command_id":"{id}","contract_id":"C-1","effective_at":"{}"}}"#,
            time(*day, 13)
        ),
        Step::Tick { day } => return Err(time(*day, 0)),
    })
}

fn day_of(offset: u32) -> chrono::NaiveDate {
    day(offset)
}

fn check_conservation(
    state: &commands::ContractState,
    view: &commands::handler::BalanceView,
) -> Result<(), TestCaseError> {
    for bucket in Bucket::ALL {
        let totals = state.totals.get(&bucket).cloned().unwrap_or_default();
        let balance = totals.net();
        prop_assert!(balance >= Decimal::ZERO, "{bucket:?} negative: {balance}");
        let lots: Decimal = state
            .lots
            .get(&bucket)
            .map_or(Decimal::ZERO, |l| l.iter().map(|lot| lot.remaining).sum());
        prop_assert_eq!(
            balance,
            lots,
            "R12: totals and lots disagree for {:?}",
            bucket
        );
        prop_assert_eq!(
            view.balances[bucket.name()],
            balance.normalize(),
            "movement sum and state disagree for {:?}",
            bucket
        );
    }
    Ok(())
}

/// R9, R11: once year 1 is assessed, its billable total (the shortfall and every adjustment, as
/// recorded on the events) is `max(0, committed − net converted)`, net of reversals; before, there
/// is none.
fn check_sab_billable(
    ledger: &ledger::Ledger,
    sab_converted: &std::collections::BTreeMap<String, Decimal>,
) -> Result<(), TestCaseError> {
    let statement = projections::audit::statement(ledger, "C-1", Default::default()).unwrap();
    let billed = |kind: &str| statement.billables.get(kind).copied();
    let committed = Decimal::new(500000, 2);
    let converted: Decimal = sab_converted.values().sum();
    let assessed = statement
        .lines
        .iter()
        .any(|line| line.event_type == "sab_shortfall_assessed");
    let total = billed("sab_shortfall").unwrap_or_default()
        + billed("sab_shortfall_adjustment").unwrap_or_default();
    if assessed {
        let expected = (committed - converted).max(Decimal::ZERO);
        prop_assert_eq!(total, expected, "R9 billable total");
    } else {
        prop_assert_eq!(total, Decimal::ZERO, "a billable before the assessment");
    }
    Ok(())
}

/// R12, R13: by effective time, no bucket is ever negative: at each day's start and noon
/// through the term and past it.
fn check_as_of_never_negative(ledger: &ledger::Ledger) -> Result<(), TestCaseError> {
    let timeline = ledger
        .projection_store(projections::timeline::NAME)
        .unwrap();
    projections::timeline::catch_up(ledger, &timeline).unwrap();
    let start: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    for half_days in 0..800 {
        let as_of = start + chrono::Duration::hours(12 * half_days);
        let filter = projections::timeline::Filter {
            as_of: Some(as_of),
            known_at: None,
            at_position: None,
        };
        let view = projections::timeline::balance(&timeline, "C-1", filter)
            .unwrap()
            .unwrap();
        for (bucket, balance) in &view.balances {
            prop_assert!(
                *balance >= Decimal::ZERO,
                "{} is {} as of {}",
                bucket,
                balance,
                as_of
            );
        }
    }
    Ok(())
}

/// Monthly statements (half-open months in the contract's zone, Europe/Berlin) tile the history:
/// every line of the whole statement is on exactly one month; each month's closing is the next
/// one's opening; the months' quantity and money movements add up to the whole's.
fn check_months_tile_the_year(ledger: &ledger::Ledger) -> Result<(), TestCaseError> {
    use chrono::TimeZone;
    let whole = projections::audit::statement(ledger, "C-1", Default::default()).unwrap();
    let berlin = chrono_tz::Europe::Berlin;
    let month_start = |index: u32| {
        let (year, month) = (2025 + index.div_ceil(12), (index + 11) % 12 + 1);
        berlin
            .with_ymd_and_hms(year as i32, month, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // December 2025 (an empty first month) to February 2027: beyond every effective time here.
    let months: Vec<_> = (0..15)
        .map(|index| {
            let period = projections::audit::Period {
                from: Some(month_start(index)),
                to: Some(month_start(index + 1)),
                known_at: None,
            };
            projections::audit::statement(ledger, "C-1", period).unwrap()
        })
        .collect();
    let mut positions: Vec<u64> = months
        .iter()
        .flat_map(|m| m.lines.iter().map(|l| l.position))
        .collect();
    positions.sort_unstable();
    let mut whole_positions: Vec<u64> = whole.lines.iter().map(|l| l.position).collect();
    whole_positions.sort_unstable();
    prop_assert_eq!(
        positions,
        whole_positions,
        "every line on exactly one month"
    );
    for pair in months.windows(2) {
        prop_assert_eq!(
            &pair[0].closing,
            &pair[1].opening,
            "closing is the next opening"
        );
        for (closing, opening) in pair[0]
            .money_roll_forward
            .iter()
            .zip(&pair[1].money_roll_forward)
        {
            prop_assert_eq!(
                closing.closing,
                opening.opening,
                "money closing is the next opening"
            );
        }
    }
    for (rolls, whole_rolls) in [
        (
            months.iter().map(|m| &m.roll_forward).collect::<Vec<_>>(),
            &whole.roll_forward,
        ),
        (
            months.iter().map(|m| &m.money_roll_forward).collect(),
            &whole.money_roll_forward,
        ),
    ] {
        for whole_roll in whole_rolls {
            let summed: Decimal = rolls
                .iter()
                .flat_map(|r| r.iter())
                .filter(|r| r.bucket == whole_roll.bucket)
                .map(|r| r.movements)
                .sum();
            prop_assert_eq!(
                summed,
                whole_roll.movements,
                "months add up for {}",
                whole_roll.bucket
            );
        }
    }
    prop_assert_eq!(&months.last().unwrap().closing, &whole.closing);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn rules_hold_over_random_histories(steps in prop::collection::vec(step(), 1..45)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger::Ledger::open(dir.path()).unwrap();
        let handler = Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "proptest");
        let submit = |json: &str| runtime.block_on(handler.submit(CommandEnvelope::from_json(json).unwrap())).unwrap();
        let setup = [
            r#"{"type":"open_contract","command_id":"open","contract_id":"C-1","customer":"X","package":"advanced","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"Europe/Berlin","holidays":["2026-05-01"],"cancellation_fee_rate":"0.50","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]}"#,
            r#"{"type":"publish_rates","command_id":"rates","effective_from":"2026-01-01T00:00:00Z","rates":{"WS":"7.4","HALF":"2.5"}}"#,
        ];
        for line in setup {
            prop_assert!(submit(line).ok);
        }
        let mut submitted: Vec<(String, commands::CommandResult)> = Vec::new();
        let mut accepted_events: Vec<String> = Vec::new();
        // The model of R9: each accepted SAB conversion's event id and value; reversals remove it.
        let mut sab_converted: std::collections::BTreeMap<String, Decimal> = Default::default();
        for (index, step) in steps.iter().enumerate() {
            let before = ledger.committed_position();
            match render(step, index, &accepted_events) {
                Ok(json) => {
                    let result = submit(&json);
                    if result.ok {
                        for event in result.events.as_ref().unwrap() {
                            accepted_events.push(event.event_id.clone());
                        }
                        match step {
                            Step::Sab { incidents, .. } => {
                                let event = &result.events.as_ref().unwrap()[0];
                                sab_converted.insert(event.event_id.clone(), Decimal::from(*incidents) * Decimal::new(50000, 2));
                            }
                            Step::Reverse { .. } => {
                                let reversed = json.split("\"event_id\":\"").nth(1).unwrap().split('"').next().unwrap();
                                sab_converted.remove(reversed);
                            }
                            _ => {}
                        }
                    } else {
                        prop_assert_eq!(ledger.committed_position(), before, "a rejection appended: {:?}", result.error);
                    }
                    submitted.push((json, result));
                }
                Err(tick_time) if tick_time.ends_with('Z') => {
                    let now: chrono::DateTime<chrono::Utc> = tick_time.parse().unwrap();
                    runtime.block_on(handler.tick(now)).unwrap();
                }
                Err(_) => continue,
            }
            let state = runtime.block_on(handler.state("C-1")).unwrap();
            let view = handler.balance("C-1", Default::default()).unwrap().unwrap();
            check_conservation(&state, &view)?;
            check_sab_billable(&ledger, &sab_converted)?;
        }
        check_as_of_never_negative(&ledger)?;
        check_months_tile_the_year(&ledger)?;
        // fold(events) == state: a cold handler folds the log from scratch.
        let warm = runtime.block_on(handler.state("C-1")).unwrap();
        let cold_handler = Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "cold");
        let cold = runtime.block_on(cold_handler.state("C-1")).unwrap();
        prop_assert_eq!(warm.version, cold.version);
        prop_assert_eq!(&warm.totals, &cold.totals);
        prop_assert_eq!(&warm.lots, &cold.lots);
        prop_assert_eq!(&warm.bookings, &cold.bookings);
        prop_assert_eq!(warm.status, cold.status);
        // Resubmitting every accepted command with its id changes nothing and answers the same.
        // (A rejected command wrote nothing, so nothing remembers it: a retry is decided afresh.)
        let end = ledger.committed_position();
        for (json, first) in submitted.iter().filter(|(_, result)| result.ok) {
            let again = runtime.block_on(cold_handler.submit(CommandEnvelope::from_json(json).unwrap())).unwrap();
            prop_assert_eq!(&again, first);
            prop_assert_eq!(ledger.committed_position(), end, "a resubmit appended: {}", json);
        }
        prop_assert!(ledger.verify().unwrap().is_ok());
        // The balance timeline answers as the stream walk does, under every kind of filter.
        let timeline = ledger.projection_store(projections::timeline::NAME).unwrap();
        projections::timeline::catch_up(&ledger, &timeline).unwrap();
        let middle = ledger.committed_position() / 2;
        for (as_of, at_position) in [(None, None), (Some("2026-06-30T00:00:00Z"), None), (None, Some(middle)), (Some("2026-03-01T00:00:00Z"), Some(middle))] {
            let as_of: Option<chrono::DateTime<chrono::Utc>> = as_of.map(|t| t.parse().unwrap());
            let walked = handler.balance("C-1", commands::handler::BalanceFilter { as_of, known_at: None, at_position }).unwrap().unwrap();
            let summed = projections::timeline::balance(&timeline, "C-1", projections::timeline::Filter { as_of, known_at: None, at_position }).unwrap().unwrap();
            prop_assert_eq!(walked.position, summed.position);
            prop_assert_eq!(&walked.balances, &summed.balances);
        }
        // The audit statement's roll-forward holds for the whole term and for any period.
        for (from, to) in [(None, None), (Some("2026-04-01T00:00:00Z"), Some("2026-09-30T00:00:00Z"))] {
            let parse = |t: Option<&str>| t.map(|t| t.parse().unwrap());
            let statement = projections::audit::statement(&ledger, "C-1", projections::audit::Period { from: parse(from), to: parse(to), known_at: None }).unwrap();
            for roll in &statement.roll_forward {
                prop_assert!(roll.reconciles, "{:?}", roll);
            }
            if from.is_none() {
                let view = handler.balance("C-1", Default::default()).unwrap().unwrap();
                for roll in &statement.roll_forward {
                    prop_assert_eq!(roll.closing.normalize(), view.balances[&roll.bucket].normalize());
                }
            }
        }
    }
}
