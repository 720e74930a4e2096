//! Rule tables: one row per rule edge, written as data (given commands / when a command /
//! then accepted or the rejection code), run through `decide` and `evolve` with no IO.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::{CommandEnvelope, Event};

use crate::decide::decide;
use crate::schedule::{decide_time_driven, due};
use crate::state::{ContractState, EventMeta, RateCard};

struct World {
    state: ContractState,
    rates: RateCard,
    rate_version: u64,
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

impl World {
    fn new() -> World {
        World {
            state: ContractState::default(),
            rates: RateCard::default(),
            rate_version: 0,
        }
    }

    fn apply(&mut self, events: Vec<crate::Decided>) -> Vec<Event> {
        let mut out = Vec::new();
        for decided in events {
            if let Event::RatesPublished(_) = decided.event {
                self.rate_version += 1;
                self.rates.evolve(&decided.event, self.rate_version);
            } else {
                let version = self.state.version + 1;
                let meta = EventMeta {
                    event_id: format!("e{version}"),
                    version,
                    effective_at: decided.effective_at,
                };
                self.state.evolve(&decided.event, &meta);
            }
            out.push(decided.event);
        }
        out
    }

    fn run(&mut self, json: &str) -> Result<Vec<Event>, crate::Rejection> {
        let envelope = CommandEnvelope::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let events = decide(
            &self.state,
            &self.rates,
            &envelope,
            at("2027-06-01T00:00:00Z"),
        )?;
        Ok(self.apply(events))
    }

    fn ok(&mut self, json: &str) -> Vec<Event> {
        self.run(json)
            .unwrap_or_else(|r| panic!("{json}: rejected {r}"))
    }

    fn tick(&mut self, now: &str) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(next) = due(&self.state, at(now)).into_iter().next() {
            let events = decide_time_driven(&self.state, &next).unwrap();
            out.extend(self.apply(events));
        }
        out
    }

    fn balance(&self, bucket: schemas::Bucket) -> Decimal {
        self.state.balance(bucket)
    }
}

fn open(package: &str, zone: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"open_contract","contract_id":"C-1","customer":"Contoso","package":"{package}","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"{zone}","holidays":["2026-12-25"]{extra}}}"#
    )
}

/// An advanced UTC contract with 100 credits, 400 DSE hours, 200 DAS hours and a rate card.
fn world() -> World {
    let mut world = World::new();
    world.ok(&open(
        "advanced",
        "UTC",
        r#","cancellation_fee_rate":"1.00""#,
    ));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"100","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"dse_hours","quantity":"400","unit_price":"200.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"das_hours","quantity":"200","unit_price":"150.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"WS-SEC":"7.4","HALF":"7.25","UNDER":"7.245","ONE":"1"}}"#);
    world
}

fn convert(booking: &str, service: &str, quantity: &str, starts: &str, effective: &str) -> String {
    format!(
        r#"{{"type":"convert_credits","contract_id":"C-1","booking_id":"{booking}","service":"{service}","quantity":"{quantity}","starts_at":"{starts}","effective_at":"{effective}"}}"#
    )
}

fn consume(bucket: &str, from: &str, to: &str) -> String {
    format!(
        r#"{{"type":"consume_hours","contract_id":"C-1","bucket":"{bucket}","started_at":"{from}","ended_at":"{to}"}}"#
    )
}

/// One table row: name, the commands given, the command run, `Ok(())` or the rejection code.
type Case<'a> = (&'a str, &'a [&'a str], &'a str, Result<(), &'a str>);

/// Runs `when` on a fresh `world()` after `given`; `then` is `Ok(())` or the rejection code.
fn table(rows: &[Case<'_>]) {
    for (name, given, when, then) in rows {
        let mut world = world();
        for command in *given {
            world.ok(command);
        }
        let outcome = world.run(when);
        match (then, outcome) {
            (Ok(()), Ok(_)) => {}
            (Err(code), Err(rejection)) => assert_eq!(rejection.code, *code, "{name}: {rejection}"),
            (then, outcome) => panic!("{name}: expected {then:?}, got {outcome:?}"),
        }
    }
}

#[test]
fn r5_business_hours_edges() {
    let dse = |from: &str, to: &str| consume("dse_hours", from, to);
    table(&[
        (
            "09:00 start inclusive",
            &[],
            &dse("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"),
            Ok(()),
        ),
        (
            "17:30 end inclusive",
            &[],
            &dse("2026-03-02T16:30:00Z", "2026-03-02T17:30:00Z"),
            Ok(()),
        ),
        (
            "08:59 start rejected",
            &[],
            &dse("2026-03-02T08:59:00Z", "2026-03-02T10:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "17:31 end rejected",
            &[],
            &dse("2026-03-02T16:30:00Z", "2026-03-02T17:31:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "17:00-18:00 rejected",
            &[],
            &dse("2026-03-03T17:00:00Z", "2026-03-03T18:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "saturday",
            &[],
            &dse("2026-03-07T09:00:00Z", "2026-03-07T10:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "sunday",
            &[],
            &dse("2026-03-08T09:00:00Z", "2026-03-08T10:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "holiday",
            &[],
            &dse("2026-12-25T09:00:00Z", "2026-12-25T10:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "across days",
            &[],
            &dse("2026-03-02T16:00:00Z", "2026-03-03T10:00:00Z"),
            Err("outside_business_hours"),
        ),
        (
            "DAS hours have no business hours",
            &[],
            &consume("das_hours", "2026-03-07T20:00:00Z", "2026-03-07T22:00:00Z"),
            Ok(()),
        ),
        (
            "not whole minutes",
            &[],
            &dse("2026-03-02T09:00:30Z", "2026-03-02T10:00:00Z"),
            Err("invalid_command"),
        ),
        (
            "end before start",
            &[],
            &dse("2026-03-02T10:00:00Z", "2026-03-02T09:00:00Z"),
            Err("invalid_command"),
        ),
        (
            "credits are not consumed",
            &[],
            &consume(
                "proactive_credits",
                "2026-03-02T09:00:00Z",
                "2026-03-02T10:00:00Z",
            ),
            Err("invalid_bucket"),
        ),
        (
            "outside the term",
            &[],
            &dse("2027-01-04T09:00:00Z", "2027-01-04T10:00:00Z"),
            Err("outside_term"),
        ),
    ]);
}

#[test]
fn r5_business_hours_follow_the_contracts_zone_on_dst_days() {
    let mut world = World::new();
    world.ok(&open("core", "Europe/Berlin", ""));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"dse_hours","quantity":"100","unit_price":"200.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    // Berlin switches to CEST on Sunday 2026-03-29. Monday 09:00–17:30 CEST = 07:00–15:30 UTC.
    world.ok(&consume(
        "dse_hours",
        "2026-03-30T07:00:00Z",
        "2026-03-30T15:30:00Z",
    ));
    // Friday before, CET: 09:00 = 08:00 UTC, so 07:30 UTC (08:30 CET) is too early.
    let early = world
        .run(&consume(
            "dse_hours",
            "2026-03-27T07:30:00Z",
            "2026-03-27T09:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(early.code, "outside_business_hours");
    assert!(early.message.contains("Europe/Berlin"), "{}", early.message);
    // Sunday of the switch is a weekend anyway; the message names the day.
    let sunday = world
        .run(&consume(
            "dse_hours",
            "2026-03-29T08:00:00Z",
            "2026-03-29T09:00:00Z",
        ))
        .unwrap_err();
    assert!(
        sunday.message.contains("2026-03-29 is a Sunday"),
        "{}",
        sunday.message
    );
    assert_eq!(
        world.balance(schemas::Bucket::DseHours),
        Decimal::from(100) - Decimal::new(85, 1)
    );
}

#[test]
fn r5_hours_round_to_two_decimals_and_insufficient_balance_says_what_remains() {
    let mut world = world();
    let events = world.ok(&consume(
        "dse_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:20:00Z",
    ));
    let Event::HoursConsumed(consumed) = &events[0] else {
        panic!()
    };
    assert_eq!(
        (consumed.minutes, consumed.hours.to_string()),
        (20, "0.33".to_owned())
    );
    let events = world.ok(&consume(
        "dse_hours",
        "2026-03-02T10:00:00Z",
        "2026-03-02T10:10:00Z",
    ));
    let Event::HoursConsumed(consumed) = &events[0] else {
        panic!()
    };
    assert_eq!(consumed.hours.to_string(), "0.17");
    let too_much = world
        .run(&consume(
            "das_hours",
            "2026-03-02T00:00:00Z",
            "2026-03-10T21:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(too_much.code, "insufficient_balance");
    assert!(
        too_much.message.contains("200 remain"),
        "{}",
        too_much.message
    );
}

#[test]
fn r3_conversion_rounds_halves_away_from_zero_and_records_rate_and_unrounded_value() {
    let mut world = world();
    let events = world.ok(&convert(
        "B-1",
        "HALF",
        "2",
        "2026-04-01T09:00:00Z",
        "2026-02-01T00:00:00Z",
    ));
    let Event::CreditsConverted(c) = &events[0] else {
        panic!()
    };
    assert_eq!(
        (
            c.rate.to_string(),
            c.credits_unrounded.to_string(),
            c.credits.to_string()
        ),
        ("7.25".into(), "14.50".into(), "15".into())
    );
    let events = world.ok(&convert(
        "B-2",
        "UNDER",
        "2",
        "2026-04-01T09:00:00Z",
        "2026-02-01T00:00:00Z",
    ));
    let Event::CreditsConverted(c) = &events[0] else {
        panic!()
    };
    assert_eq!(
        (c.credits_unrounded.to_string(), c.credits.to_string()),
        ("14.490".into(), "14".into())
    );
    assert_eq!(
        world.balance(schemas::Bucket::ProactiveCredits),
        Decimal::from(71)
    );
    // The money value of the draw is credits × the lot's unit price.
    assert_eq!(c.movements[0].value, Decimal::from(14 * 250));
    table(&[
        (
            "unknown service",
            &[],
            &convert(
                "B",
                "NOPE",
                "1",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("unknown_service"),
        ),
        (
            "rate not yet in force",
            &[
                r#"{"type":"publish_rates","effective_from":"2026-06-01T00:00:00Z","rates":{"LATER":"1"}}"#,
            ],
            &convert(
                "B",
                "LATER",
                "1",
                "2026-07-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("unknown_service"),
        ),
        (
            "start before the request",
            &[],
            &convert(
                "B",
                "ONE",
                "1",
                "2026-01-31T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("booking_in_past"),
        ),
        (
            "start outside the term",
            &[],
            &convert(
                "B",
                "ONE",
                "1",
                "2027-01-02T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("booking_outside_term"),
        ),
        (
            "not enough credits",
            &[],
            &convert(
                "B",
                "ONE",
                "101",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("insufficient_balance"),
        ),
        (
            "zero quantity",
            &[],
            &convert(
                "B",
                "ONE",
                "0",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("invalid_quantity"),
        ),
        (
            "negative quantity",
            &[],
            &convert(
                "B",
                "ONE",
                "-1",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("invalid_quantity"),
        ),
        (
            "booking id reused",
            &[&convert(
                "B",
                "ONE",
                "1",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            )],
            &convert(
                "B",
                "ONE",
                "1",
                "2026-04-01T09:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            Err("booking_exists"),
        ),
    ]);
}

#[test]
fn r7_request_deadline_is_sixty_days_before_term_end() {
    // term_end 2026-12-31 − 60 days = 2026-11-01.
    table(&[
        (
            "on the deadline day",
            &[],
            &convert(
                "B",
                "ONE",
                "1",
                "2026-12-01T09:00:00Z",
                "2026-11-01T23:59:00Z",
            ),
            Ok(()),
        ),
        (
            "one day later",
            &[],
            &convert(
                "B",
                "ONE",
                "1",
                "2026-12-01T09:00:00Z",
                "2026-11-02T00:00:00Z",
            ),
            Err("request_deadline_passed"),
        ),
    ]);
    // Core contracts have no deadline.
    let mut core = World::new();
    core.ok(&open("core", "UTC", ""));
    core.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"10","unit_price":"1","effective_at":"2026-01-01T00:00:00Z"}"#);
    core.ok(
        r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"ONE":"1"}}"#,
    );
    core.ok(&convert(
        "B",
        "ONE",
        "1",
        "2026-12-20T09:00:00Z",
        "2026-12-10T00:00:00Z",
    ));
}

fn cancellation_fee(fee_rate: &str, service: &str, cancel_at: &str) -> (bool, String, Decimal) {
    let mut world = World::new();
    world.ok(&open(
        "core",
        "UTC",
        &format!(r#","cancellation_fee_rate":"{fee_rate}""#),
    ));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"100","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"WS-SEC":"7.4","FIFTEEN":"15"}}"#);
    world.ok(&convert(
        "B-1",
        service,
        "2",
        "2026-03-16T09:00:00Z",
        "2026-02-01T10:00:00Z",
    ));
    let events = world.ok(&format!(r#"{{"type":"cancel_booking","contract_id":"C-1","booking_id":"B-1","effective_at":"{cancel_at}"}}"#));
    let Event::BookingCancelled(cancelled) = &events[0] else {
        panic!()
    };
    (
        cancelled.late,
        cancelled.fee_credits.to_string(),
        world.balance(schemas::Bucket::ProactiveCredits),
    )
}

#[test]
fn r6_fourteen_days_exactly_is_free_one_minute_later_costs_the_fee() {
    // Booking of 15 credits starting 2026-03-16T09:00Z; 14 days before is 2026-03-02T09:00Z.
    assert_eq!(
        cancellation_fee("1.00", "WS-SEC", "2026-03-02T09:00:00Z"),
        (false, "0".into(), Decimal::from(100))
    );
    assert_eq!(
        cancellation_fee("1.00", "WS-SEC", "2026-03-02T09:01:00Z"),
        (true, "15".into(), Decimal::from(85))
    );
    // Worked example: 11 days before, 100 %: nothing comes back.
    assert_eq!(
        cancellation_fee("1.00", "WS-SEC", "2026-03-05T10:00:00Z"),
        (true, "15".into(), Decimal::from(85))
    );
    // Fee rounding, halves away from zero: 0.30 × 15 = 4.5 → 5; 0.29 × 15 = 4.35 → 4.
    assert_eq!(
        cancellation_fee("0.30", "WS-SEC", "2026-03-05T10:00:00Z").1,
        "5"
    );
    assert_eq!(
        cancellation_fee("0.29", "WS-SEC", "2026-03-05T10:00:00Z").1,
        "4"
    );
    // After the start the booking is delivered.
    let mut world = world();
    world.ok(&convert(
        "B-1",
        "ONE",
        "2",
        "2026-03-16T09:00:00Z",
        "2026-02-01T10:00:00Z",
    ));
    let late = world.run(r#"{"type":"cancel_booking","contract_id":"C-1","booking_id":"B-1","effective_at":"2026-03-16T09:00:00Z"}"#).unwrap_err();
    assert_eq!(late.code, "booking_delivered");
}

#[test]
fn r6_reschedule_fee_beyond_the_balance_is_billable_at_the_newest_lot_price() {
    let mut world = World::new();
    world.ok(&open("core", "UTC", ""));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"10","unit_price":"200.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"10","unit_price":"250.00","effective_at":"2026-02-01T00:00:00Z"}"#);
    world.ok(
        r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"BIG":"16"}}"#,
    );
    world.ok(&convert(
        "B-1",
        "BIG",
        "1",
        "2026-03-16T09:00:00Z",
        "2026-02-10T00:00:00Z",
    ));
    assert_eq!(
        world.balance(schemas::Bucket::ProactiveCredits),
        Decimal::from(4)
    );
    let events = world.ok(r#"{"type":"reschedule_booking","contract_id":"C-1","booking_id":"B-1","starts_at":"2026-04-20T09:00:00Z","effective_at":"2026-03-10T00:00:00Z"}"#);
    let Event::BookingRescheduled(r) = &events[0] else {
        panic!()
    };
    assert_eq!(
        (r.fee_credits, r.uncovered_credits),
        (Decimal::from(16), Decimal::from(12))
    );
    assert_eq!(r.billables[0].amount, Decimal::from(12 * 250));
    assert_eq!(
        world.balance(schemas::Bucket::ProactiveCredits),
        Decimal::ZERO
    );
    // The booking keeps its credits and moves.
    assert_eq!(
        world.state.bookings["B-1"].starts_at,
        at("2026-04-20T09:00:00Z")
    );
}

#[test]
fn r3_exchange_returns_the_old_credits_charges_the_fee_and_books_the_new_service() {
    let mut world = world();
    world.ok(&convert(
        "B-1",
        "WS-SEC",
        "2",
        "2026-03-16T09:00:00Z",
        "2026-02-01T10:00:00Z",
    )); // 15
    let events = world.ok(r#"{"type":"exchange_booking","contract_id":"C-1","booking_id":"B-1","new_booking_id":"B-2","service":"ONE","quantity":"10","starts_at":"2026-04-16T09:00:00Z","effective_at":"2026-02-10T00:00:00Z"}"#);
    let Event::BookingExchanged(x) = &events[0] else {
        panic!()
    };
    assert!(!x.late);
    assert_eq!(
        world.balance(schemas::Bucket::ProactiveCredits),
        Decimal::from(90)
    );
    assert!(!world.state.bookings["B-1"].active && world.state.bookings["B-2"].active);
}

#[test]
fn r2_purchase_limits() {
    let buy = |item: &str, quantity: &str, custom: bool| {
        format!(
            r#"{{"type":"purchase","contract_id":"C-1","item":"{item}","quantity":"{quantity}","unit_price":"100.00","effective_at":"2026-02-01T00:00:00Z","custom_scope":{custom}}}"#
        )
    };
    table(&[
        ("DAS 400", &[], &buy("das_hours", "400", false), Ok(())),
        ("DAS 1600", &[], &buy("das_hours", "1600", false), Ok(())),
        (
            "DAS 300",
            &[],
            &buy("das_hours", "300", false),
            Err("invalid_package_size"),
        ),
        (
            "credits whole",
            &[],
            &buy("proactive_credits", "10.5", false),
            Err("invalid_quantity"),
        ),
        (
            "DSE 2 decimals",
            &[],
            &buy("dse_hours", "10.25", false),
            Ok(()),
        ),
        (
            "DSE 3 decimals",
            &[],
            &buy("dse_hours", "10.255", false),
            Err("invalid_quantity"),
        ),
        (
            "zero",
            &[],
            &buy("dse_hours", "0", false),
            Err("invalid_quantity"),
        ),
        (
            "dev advanced 320",
            &[],
            &buy("developer_advanced", "320", false),
            Ok(()),
        ),
        (
            "dev advanced 319",
            &[],
            &buy("developer_advanced", "319", false),
            Err("developer_hours_out_of_range"),
        ),
        (
            "dev advanced 100 custom",
            &[],
            &buy("developer_advanced", "100", true),
            Ok(()),
        ),
        (
            "dev advanced 800 in total",
            &[&buy("developer_advanced", "320", false)],
            &buy("developer_advanced", "480", false),
            Ok(()),
        ),
        (
            "dev advanced 801 in total",
            &[&buy("developer_advanced", "320", false)],
            &buy("developer_advanced", "481", false),
            Err("developer_hours_out_of_range"),
        ),
        (
            "dev advanced above 800 even custom",
            &[],
            &buy("developer_advanced", "801", true),
            Err("developer_hours_out_of_range"),
        ),
        (
            "dev performance on advanced",
            &[],
            &buy("developer_performance", "800", false),
            Err("package_not_eligible"),
        ),
        (
            "outside the term",
            &[],
            r#"{"type":"purchase","contract_id":"C-1","item":"dse_hours","quantity":"1","unit_price":"1","effective_at":"2027-01-01T00:00:00Z"}"#,
            Err("outside_term"),
        ),
        (
            "unknown contract",
            &[],
            r#"{"type":"purchase","contract_id":"C-2","item":"dse_hours","quantity":"1","unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#,
            Err("unknown_contract"),
        ),
    ]);
    let mut performance = World::new();
    performance.ok(&open("performance", "UTC", ""));
    assert_eq!(
        performance
            .run(&buy("developer_performance", "799", false))
            .unwrap_err()
            .code,
        "developer_hours_out_of_range"
    );
    performance.ok(&buy("developer_performance", "799", true));
    performance.ok(&buy("developer_performance", "800", false));
    let mut core = World::new();
    core.ok(&open("core", "UTC", ""));
    assert_eq!(
        core.run(&buy("developer_advanced", "320", false))
            .unwrap_err()
            .code,
        "package_not_eligible"
    );
}

#[test]
fn r1_opening_rules() {
    let mut world = World::new();
    for (command, code) in [
        (
            open("core", "UTC", r#","currency":"XYZ""#).replace(r#""currency":"USD","#, ""),
            "invalid_currency",
        ),
        (open("core", "Mars/Olympus", ""), "invalid_time_zone"),
        (
            open("core", "UTC", r#","cancellation_fee_rate":"1.5""#),
            "invalid_fee_rate",
        ),
        (
            open("core", "UTC", "").replace("2026-12-31", "2025-12-31"),
            "invalid_term",
        ),
        (
            open(
                "core",
                "UTC",
                r#","sab_commitments":[{"year":2,"incidents":1,"value_per_incident":"1"}]"#,
            ),
            "invalid_sab_commitment",
        ),
    ] {
        assert_eq!(world.run(&command).unwrap_err().code, code, "{command}");
    }
    world.ok(&open("core", "UTC", ""));
    assert_eq!(
        world.run(&open("core", "UTC", "")).unwrap_err().code,
        "contract_exists"
    );
}

#[test]
fn worked_example_shortfall_and_expiry() {
    let mut world = World::new();
    world.ok(&open("advanced", "UTC", r#","cancellation_fee_rate":"1.00","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]"#));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"100","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"dse_hours","quantity":"400","unit_price":"200.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"convert_sab","contract_id":"C-1","incidents":6,"value_per_incident":"500.00","applied_to":"base_fee","effective_at":"2026-01-20T00:00:00Z"}"#);
    assert!(
        world.tick("2026-01-30T23:59:59Z").is_empty(),
        "not due before 2026-01-31T00:00"
    );
    let assessed = world.tick("2026-01-31T00:00:00Z");
    let Event::SabShortfallAssessed(a) = &assessed[0] else {
        panic!("{assessed:?}")
    };
    assert_eq!(a.shortfall, Decimal::from(2000));
    assert!(
        world.tick("2026-01-31T00:00:00Z").is_empty(),
        "exactly once"
    );
    // R9: a late conversion lowers the billable, never below zero in total.
    let events = world.ok(r#"{"type":"convert_sab","contract_id":"C-1","incidents":5,"value_per_incident":"500.00","applied_to":"dse","effective_at":"2026-02-10T00:00:00Z"}"#);
    let Event::SabShortfallAdjusted(adj) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(adj.billables[0].amount, Decimal::from(-2000));
    world.ok(&consume(
        "dse_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T12:30:00Z",
    ));
    let expired = world.tick("2027-01-01T00:00:00Z");
    let Some(Event::BalancesForfeited(f)) = expired.last() else {
        panic!()
    };
    let forfeited: Decimal = f.movements.iter().map(|m| m.quantity).sum();
    assert_eq!(forfeited, Decimal::from(100) + Decimal::new(3965, 1));
    assert_eq!(
        world
            .run(&consume(
                "dse_hours",
                "2026-03-03T09:00:00Z",
                "2026-03-03T10:00:00Z"
            ))
            .unwrap_err()
            .code,
        "contract_expired"
    );
}

#[test]
fn r8_termination_forfeits_dse_too_and_then_only_reads() {
    let mut world = world();
    let events = world.ok(r#"{"type":"terminate_contract","contract_id":"C-1","effective_at":"2026-06-30T12:00:00Z"}"#);
    assert_eq!(events.len(), 2);
    assert!(
        schemas::Bucket::ALL
            .iter()
            .all(|b| world.balance(*b).is_zero())
    );
    let after = world
        .run(&consume(
            "dse_hours",
            "2026-07-01T09:00:00Z",
            "2026-07-01T10:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(after.code, "contract_terminated");
}

#[test]
fn r8_a_termination_backdated_before_recorded_activity_is_refused() {
    let mut world = world();
    world.ok(&consume(
        "dse_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T10:00:00Z",
    ));
    let refused = world
        .run(r#"{"type":"terminate_contract","contract_id":"C-1","effective_at":"2026-02-01T00:00:00Z"}"#)
        .unwrap_err();
    assert_eq!(
        (refused.code.as_str(), refused.rule.as_deref().unwrap_or("")),
        ("termination_before_activity", "R8")
    );
    assert!(
        refused.message.contains("2026-03-02 10:00 UTC"),
        "{}",
        refused.message
    );
    // At the activity's own time it is accepted, and forfeits everything.
    world.ok(r#"{"type":"terminate_contract","contract_id":"C-1","effective_at":"2026-03-02T10:00:00Z"}"#);
    assert!(
        schemas::Bucket::ALL
            .iter()
            .all(|b| world.balance(*b).is_zero())
    );
}

#[test]
fn r11_reversals() {
    let mut world = world();
    world.ok(&consume(
        "dse_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T10:00:00Z",
    ));
    let consumed_id = format!("e{}", world.state.version);
    let reverse = |id: &str| {
        format!(
            r#"{{"type":"reverse","contract_id":"C-1","event_id":"{id}","reason":"wrong timesheet"}}"#
        )
    };
    assert_eq!(
        world
            .run(&reverse(&consumed_id).replace(r#","reason":"wrong timesheet""#, ""))
            .unwrap_err()
            .code,
        "reason_required"
    );
    world.ok(&reverse(&consumed_id));
    assert_eq!(world.balance(schemas::Bucket::DseHours), Decimal::from(400));
    let reversal_id = format!("e{}", world.state.version);
    assert_eq!(
        world.run(&reverse(&consumed_id)).unwrap_err().code,
        "already_reversed"
    );
    assert_eq!(
        world.run(&reverse(&reversal_id)).unwrap_err().code,
        "reversal_of_reversal"
    );
    assert_eq!(
        world.run(&reverse("e999")).unwrap_err().code,
        "unknown_event"
    );
    // A purchase is reversible only while its lot is untouched: DSE lot L3 was drawn from.
    assert_eq!(world.run(&reverse("e3")).unwrap_err().code, "lot_in_use");
    // After the term a reversal is still accepted, and what it returns is forfeited with it.
    world.ok(&consume(
        "das_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T11:00:00Z",
    ));
    let das_id = format!("e{}", world.state.version);
    world.tick("2027-01-01T00:00:00Z");
    let events = world.ok(&reverse(&das_id));
    assert!(
        matches!(events.last(), Some(Event::BalancesForfeited(_))),
        "{events:?}"
    );
    assert_eq!(world.balance(schemas::Bucket::DasHours), Decimal::ZERO);
}

/// A core UTC contract with no purchases yet (for the effective-time cases of R12, R13).
fn bare_core() -> World {
    let mut world = World::new();
    world.ok(&open("core", "UTC", ""));
    world
}

fn buy_dse(quantity: &str, price: &str, effective: &str) -> String {
    format!(
        r#"{{"type":"purchase","contract_id":"C-1","item":"dse_hours","quantity":"{quantity}","unit_price":"{price}","effective_at":"{effective}"}}"#
    )
}

#[test]
fn r13_a_late_entry_never_spends_a_purchase_made_after_it() {
    let mut world = bare_core();
    world.ok(&buy_dse("10", "100.00", "2026-01-05T00:00:00Z"));
    world.ok(&buy_dse("10", "150.00", "2026-03-02T00:00:00Z"));
    world.ok(&consume(
        "dse_hours",
        "2026-02-02T09:00:00Z",
        "2026-02-02T17:00:00Z",
    ));
    let rejected = world
        .run(&consume(
            "dse_hours",
            "2026-02-03T09:00:00Z",
            "2026-02-03T17:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(
        (
            rejected.code.as_str(),
            rejected.rule.as_deref().unwrap_or("")
        ),
        ("insufficient_balance", "R5")
    );
    assert!(
        rejected
            .message
            .contains("had 2 available at 2026-02-03 17:00 UTC"),
        "{}",
        rejected.message
    );
    // Work in March may use the March lot.
    world.ok(&consume(
        "dse_hours",
        "2026-03-03T09:00:00Z",
        "2026-03-03T17:00:00Z",
    ));
}

#[test]
fn r13_a_late_entry_never_takes_what_a_later_deduction_already_used() {
    let mut world = bare_core();
    world.ok(&buy_dse("10", "100.00", "2026-01-05T00:00:00Z"));
    // March work recorded first uses 8 of the 10.
    world.ok(&consume(
        "dse_hours",
        "2026-03-02T09:00:00Z",
        "2026-03-02T17:00:00Z",
    ));
    // February work entered late: at 02-03 the lot holds 10, but only 2 may go without
    // taking the March work's hours.
    let rejected = world
        .run(&consume(
            "dse_hours",
            "2026-02-03T09:00:00Z",
            "2026-02-03T12:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(rejected.code, "insufficient_balance");
    assert!(
        rejected.message.contains("had 2 available"),
        "{}",
        rejected.message
    );
    let events = world.ok(&consume(
        "dse_hours",
        "2026-02-03T09:00:00Z",
        "2026-02-03T11:00:00Z",
    ));
    let Event::HoursConsumed(consumed) = &events[0] else {
        panic!()
    };
    assert_eq!(consumed.movements[0].lot, "L2");
    assert_eq!(world.balance(schemas::Bucket::DseHours), Decimal::ZERO);
}

#[test]
fn r13_lots_are_drawn_oldest_first_among_those_bought_by_then() {
    let mut world = bare_core();
    world.ok(&buy_dse("4", "150.00", "2026-03-02T00:00:00Z"));
    world.ok(&buy_dse("4", "100.00", "2026-01-05T00:00:00Z"));
    let events = world.ok(&consume(
        "dse_hours",
        "2026-03-03T09:00:00Z",
        "2026-03-03T15:00:00Z",
    ));
    let Event::HoursConsumed(consumed) = &events[0] else {
        panic!()
    };
    let draws: Vec<(String, String)> = consumed
        .movements
        .iter()
        .map(|m| (m.lot.clone(), m.quantity.to_string()))
        .collect();
    // L3 was bought (effective) first, so it pays first, though recorded second.
    assert_eq!(
        draws,
        vec![("L3".into(), "4".into()), ("L2".into(), "2".into())]
    );
}

#[test]
fn r5_das_and_adm_work_may_end_exactly_at_the_end_of_the_term() {
    table(&[
        (
            "DAS 22:00–00:00 on term_end",
            &[],
            &consume("das_hours", "2026-12-31T22:00:00Z", "2027-01-01T00:00:00Z"),
            Ok(()),
        ),
        (
            "DAS one minute past the end of the term",
            &[],
            &consume("das_hours", "2026-12-31T22:00:00Z", "2027-01-01T00:01:00Z"),
            Err("outside_term"),
        ),
        (
            "DAS starting on the day after term_end",
            &[],
            &consume("das_hours", "2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"),
            Err("outside_term"),
        ),
    ]);
}

#[test]
fn r3_a_conversion_that_rounds_to_zero_credits_is_an_invalid_quantity() {
    let mut world = world();
    world.ok(r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"TINY":"0.4"}}"#);
    let rejected = world
        .run(&convert(
            "B-0",
            "TINY",
            "1",
            "2026-03-16T09:00:00Z",
            "2026-02-01T00:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(
        (
            rejected.code.as_str(),
            rejected.rule.as_deref().unwrap_or("")
        ),
        ("invalid_quantity", "R3")
    );
}

#[test]
fn r6_the_uncovered_fee_is_priced_at_the_newest_unreversed_lot_bought_by_then() {
    let mut world = World::new();
    world.ok(&open("core", "UTC", ""));
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"16","unit_price":"200.00","effective_at":"2026-01-01T00:00:00Z"}"#);
    // Bought after the request: not "by then".
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"10","unit_price":"400.00","effective_at":"2026-06-01T00:00:00Z"}"#);
    // Bought by then but reversed: not a lot any more.
    world.ok(r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"10","unit_price":"300.00","effective_at":"2026-02-01T00:00:00Z"}"#);
    world.ok(r#"{"type":"reverse","contract_id":"C-1","event_id":"e4","reason":"entered twice"}"#);
    world.ok(
        r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"BIG":"16"}}"#,
    );
    world.ok(&convert(
        "B-1",
        "BIG",
        "1",
        "2026-03-16T09:00:00Z",
        "2026-02-10T00:00:00Z",
    ));
    let events = world.ok(r#"{"type":"reschedule_booking","contract_id":"C-1","booking_id":"B-1","starts_at":"2026-04-20T09:00:00Z","effective_at":"2026-03-10T00:00:00Z"}"#);
    let Event::BookingRescheduled(r) = &events[0] else {
        panic!()
    };
    assert_eq!(r.uncovered_credits, Decimal::from(16));
    assert_eq!(r.billables[0].amount, Decimal::from(16 * 200));
}

fn sab_world() -> World {
    let mut world = World::new();
    world.ok(&open(
        "advanced",
        "UTC",
        r#","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]"#,
    ));
    world
}

fn convert_sab(incidents: u32, effective: &str) -> String {
    format!(
        r#"{{"type":"convert_sab","contract_id":"C-1","incidents":{incidents},"value_per_incident":"500.00","applied_to":"base_fee","effective_at":"{effective}"}}"#
    )
}

/// Year 1's billable total: the shortfall plus every adjustment.
fn year_one_billable(world: &World) -> Decimal {
    world.state.shortfall_billable[&1]
}

#[test]
fn r9_reversing_a_sab_conversion_raises_the_billable_again() {
    let mut world = sab_world();
    world.ok(&convert_sab(2, "2026-01-20T00:00:00Z"));
    let before_assessment = format!("e{}", world.state.version);
    world.tick("2026-01-31T00:00:00Z");
    assert_eq!(year_one_billable(&world), Decimal::from(4000));
    world.ok(&convert_sab(3, "2026-02-10T00:00:00Z"));
    let after_assessment = format!("e{}", world.state.version - 1);
    assert_eq!(year_one_billable(&world), Decimal::from(2500));
    let reverse = |id: &str| {
        format!(
            r#"{{"type":"reverse","contract_id":"C-1","event_id":"{id}","reason":"wrong year"}}"#
        )
    };
    let events = world.ok(&reverse(&after_assessment));
    let Some(Event::SabShortfallAdjusted(adjusted)) = events.get(1) else {
        panic!("{events:?}")
    };
    assert_eq!(adjusted.billables[0].amount, Decimal::from(1500));
    assert_eq!(year_one_billable(&world), Decimal::from(4000));
    world.ok(&convert_sab(6, "2026-03-10T00:00:00Z"));
    assert_eq!(year_one_billable(&world), Decimal::from(1000));
    // The conversion made before the assessment, reversed: its 1,000.00 comes back too.
    world.ok(&reverse(&before_assessment));
    assert_eq!(year_one_billable(&world), Decimal::from(2000));
}

#[test]
fn r9_no_assessment_falls_due_at_or_after_expiry_or_termination() {
    // A term shorter than 30 days: year 1's assessment would be due after the expiry.
    let mut world = World::new();
    world.ok(r#"{"type":"open_contract","contract_id":"C-1","customer":"Contoso","package":"core","term_start":"2026-01-01","term_end":"2026-01-20","currency":"USD","time_zone":"UTC","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]}"#);
    let events = world.tick("2026-03-01T00:00:00Z");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SabShortfallAssessed(_))),
        "{events:?}"
    );
    // Terminated before the due date: no assessment either.
    let mut world = sab_world();
    world.ok(r#"{"type":"terminate_contract","contract_id":"C-1","effective_at":"2026-01-15T00:00:00Z"}"#);
    let events = world.tick("2026-03-01T00:00:00Z");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SabShortfallAssessed(_))),
        "{events:?}"
    );
}

#[test]
fn r11_reversible_events_are_exactly_those_listed() {
    let mut world = world();
    world.ok(&convert(
        "B-1",
        "WS-SEC",
        "1",
        "2026-03-16T09:00:00Z",
        "2026-02-01T00:00:00Z",
    ));
    let conversion = format!("e{}", world.state.version);
    world.ok(r#"{"type":"cancel_booking","contract_id":"C-1","booking_id":"B-1","effective_at":"2026-02-02T00:00:00Z"}"#);
    let cancellation = format!("e{}", world.state.version);
    let reverse = |id: &str| {
        format!(r#"{{"type":"reverse","contract_id":"C-1","event_id":"{id}","reason":"mistake"}}"#)
    };
    assert_eq!(
        world.run(&reverse(&cancellation)).unwrap_err().code,
        "not_reversible"
    );
    assert_eq!(
        world.run(&reverse("e1")).unwrap_err().code,
        "not_reversible"
    );
    // The cancelled booking's conversion is no longer booked.
    assert_eq!(
        world.run(&reverse(&conversion)).unwrap_err().code,
        "booking_not_active"
    );
}

mod histories {
    //! Property tests over random histories entered out of effective order, with reversals
    //! and ticks (issue 14): no lot and no bucket is ever negative at any effective time
    //! (`balance --as-of T` ≥ 0 for every T), and an assessed year's SAB billable always equals
    //! `max(0, committed − net converted)`.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Buy { day: u32, hours: u32 },
        Consume { day: u32, hours: u32 },
        Sab { day: u32, incidents: u32 },
        Reverse { pick: usize },
        Tick { day: u32 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..360, 1u32..12).prop_map(|(day, hours)| Step::Buy { day, hours }),
            (0u32..360, 1u32..8).prop_map(|(day, hours)| Step::Consume { day, hours }),
            (0u32..360, 1u32..5).prop_map(|(day, incidents)| Step::Sab { day, incidents }),
            (0usize..64).prop_map(|pick| Step::Reverse { pick }),
            (0u32..400).prop_map(|day| Step::Tick { day }),
        ]
    }

    fn day(offset: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(offset.into())
    }

    fn command(step: &Step, world: &World) -> Option<String> {
        Some(match step {
            Step::Buy { day: d, hours } => buy_dse(
                &hours.to_string(),
                "100.00",
                &format!("{}T00:00:00Z", day(*d)),
            ),
            Step::Consume { day: d, hours } => consume(
                "dse_hours",
                &format!("{}T09:00:00Z", day(*d)),
                &format!("{}T{:02}:00:00Z", day(*d), 9 + hours),
            ),
            Step::Sab { day: d, incidents } => {
                convert_sab(*incidents, &format!("{}T00:00:00Z", day(*d)))
            }
            Step::Reverse { pick } => {
                let version = (*pick as u64 % world.state.version.max(1)) + 1;
                format!(
                    r#"{{"type":"reverse","contract_id":"C-1","event_id":"e{version}","reason":"test"}}"#
                )
            }
            Step::Tick { .. } => return None,
        })
    }

    fn check(world: &World) -> Result<(), TestCaseError> {
        for (bucket, lots) in &world.state.lots {
            let mut times: Vec<_> = lots
                .iter()
                .flat_map(|lot| lot.history.iter().map(|(t, _, _)| *t))
                .collect();
            times.sort();
            for t in times {
                let mut in_bucket = Decimal::ZERO;
                for lot in lots {
                    let held = lot.held_at(t);
                    prop_assert!(
                        held >= Decimal::ZERO,
                        "lot {} of {bucket:?} at {t}: {held}",
                        lot.id
                    );
                    in_bucket += held;
                }
                prop_assert!(in_bucket >= Decimal::ZERO);
            }
        }
        if let Some(standing) = world.state.shortfall_billable.get(&1) {
            let converted = world
                .state
                .sab_converted
                .get(&1)
                .copied()
                .unwrap_or_default();
            let expected = (Decimal::from(5000) - converted).max(Decimal::ZERO);
            prop_assert_eq!(*standing, expected);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn late_entries_and_reversals_never_make_history_negative(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let mut world = World::new();
            world.ok(&open(
                "core",
                "UTC",
                r#","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]"#,
            ));
            for step in &steps {
                match command(step, &world) {
                    Some(json) => {
                        let _ = world.run(&json);
                    }
                    None => {
                        let Step::Tick { day: d } = step else { unreachable!() };
                        world.tick(&format!("{}T00:00:00Z", day(*d)));
                    }
                }
                check(&world)?;
            }
        }
    }
}
