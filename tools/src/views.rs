//! The read side's renderers: one per view and format (table, JSON, CSV; HTML for the audit
//! statement), for answers found in the store here or answered by the service over NATS alike
//! (`projections::query`), so both print the same. And `rebuild`. Glue: the numbers come from
//! `projections`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use projections::audit::Statement;
use projections::query::{Answer, LogEntry, VerifyAnswer};
use projections::shortfalls::BillableEntry;

use crate::Format;

/// Prints an answer in `format`; the exit code is the verb's (`verify`: 1 when the log is
/// broken).
pub fn print(answer: &Answer, format: Format) -> anyhow::Result<ExitCode> {
    match answer {
        Answer::Balance(view) => crate::contract::print_balance(view, format),
        Answer::BalanceDetail(detail) => print_balance_detail(detail, format),
        Answer::Audit(statement) => print_statement(statement, format),
        Answer::Shortfalls(entries) => print_shortfalls(entries, format),
        Answer::Notices(notices) => print_notices(notices, format),
        Answer::Replay(steps) => print_replay(steps, format),
        Answer::Diff(diff) => print_diff(diff, format),
        Answer::Verify(report) => print_verify(report, format),
        Answer::Log(entries) => print_log(entries, format),
    }
}

/// Prints a verification; exit 1 when the log is broken.
pub fn print_verify(report: &VerifyAnswer, format: Format) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(report)?)?,
        Format::Table | Format::Csv | Format::Html => {
            writeln!(
                out,
                "checked {} events in {} streams up to position {} (chain head {})",
                report.events_checked,
                report.streams_checked,
                report.last_position,
                report.last_hash
            )?;
            match (&report.first_bad_position, &report.problem) {
                (Some(position), Some(problem)) => {
                    writeln!(out, "BROKEN at position {position}: {problem}")?;
                }
                _ => writeln!(out, "ok")?,
            }
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints raw events: JSON lines (also for CSV), or a table.
pub fn print_log(entries: &[LogEntry], format: Format) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if format == Format::Table {
        writeln!(
            out,
            "{:>8}  {:<20} {:>5}  {:<24} {:<30} payload",
            "position", "stream", "ver", "type", "recorded"
        )?;
    }
    for entry in entries {
        match format {
            Format::Table | Format::Html => writeln!(
                out,
                "{:>8}  {:<20} {:>5}  {:<24} {:<30} {}",
                entry.position,
                entry.stream,
                entry.version,
                entry.event_type,
                entry.recorded_at,
                entry.payload
            )?,
            Format::Json | Format::Csv => writeln!(out, "{}", serde_json::to_string(entry)?)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a statement (built here or answered by the service).
pub fn print_statement(statement: &Statement, format: Format) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&statement)?)?,
        Format::Csv => write_csv(statement, &mut out)?,
        Format::Table => write_table(statement, &mut out)?,
        Format::Html => write!(out, "{}", crate::html::statement_html(statement))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The statement's zone (UTC if it does not parse).
pub fn zone(statement: &Statement) -> chrono_tz::Tz {
    statement.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC)
}

/// A time as statements show it: local, to the minute, with the zone's abbreviation
/// (`2026-02-01 00:00 CET`).
pub fn when(t: &chrono::DateTime<chrono::FixedOffset>, zone: chrono_tz::Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn kind_text<T: serde::Serialize>(kind: &T) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A lot movement as a statement shows it: `dse_hours consumed L4 2.00 × 210.00 = 420.00 USD`.
pub fn lot_text(m: &schemas::Movement, currency: &str) -> String {
    format!(
        "{} {} {} {} × {} = {} {currency}",
        m.bucket.name(),
        kind_text(&m.kind),
        m.lot,
        m.quantity,
        m.unit_price,
        m.value
    )
}

/// A SAB conversion as a statement shows it.
pub fn sab_text(sab: &projections::audit::SabLine, currency: &str) -> String {
    format!(
        "SAB {} incidents × {} = {} {currency}, applied to {}, support year {}",
        sab.incidents, sab.value_per_incident, sab.amount, sab.applied_to, sab.support_year
    )
}

/// What a reversal undid, as a statement shows it.
pub fn undone_text(undone: &projections::audit::Undone) -> String {
    match undone.position {
        Some(position) => format!(
            "undoes {} at position {position} (event {})",
            undone.event_type, undone.event_id
        ),
        None => format!("undoes {} (event {})", undone.event_type, undone.event_id),
    }
}

fn write_csv(statement: &Statement, out: &mut dyn Write) -> anyhow::Result<()> {
    let zone = zone(statement);
    let local = |t: &chrono::DateTime<chrono::FixedOffset>| {
        t.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record([
        "contract_id",
        "row",
        "effective_at",
        "recorded_at",
        "time_zone",
        "position",
        "event_type",
        "bucket",
        "kind",
        "lot",
        "quantity",
        "unit_price",
        "amount",
        "currency",
        "running_balance",
        "event_id",
        "actor",
        "reference",
        "reason",
    ])?;
    let currency = statement.currency.as_str();
    let contract = statement.contract_id.as_str();
    let time_zone = statement.time_zone.as_str();
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let money_of = |rolls: &[projections::audit::RollForward], bucket: &str| {
        rolls
            .iter()
            .find(|r| r.bucket == bucket)
            .map(|r| (r.opening, r.closing))
            .unwrap_or_default()
    };
    for (bucket, balance) in &statement.opening {
        let (value, _) = money_of(&statement.money_roll_forward, bucket);
        writer.write_record([
            contract,
            "opening",
            "",
            "",
            time_zone,
            "",
            "",
            bucket,
            "",
            "",
            "",
            "",
            &value.to_string(),
            currency,
            &balance.to_string(),
            "",
            "",
            "",
            "",
        ])?;
    }
    for line in &statement.lines {
        let common = |bucket: &str,
                      kind: &str,
                      lot: &str,
                      quantity: String,
                      unit_price: String,
                      amount: String,
                      running: String| {
            vec![
                contract.to_owned(),
                "movement".to_owned(),
                local(&line.effective_at),
                local(&line.recorded_at),
                time_zone.to_owned(),
                line.position.to_string(),
                line.event_type.clone(),
                bucket.to_owned(),
                kind.to_owned(),
                lot.to_owned(),
                quantity,
                unit_price,
                amount,
                currency.to_owned(),
                running,
                line.event_id.clone(),
                opt(&line.actor),
                opt(&line.reference),
                opt(&line.reason),
            ]
        };
        let mut rows = Vec::new();
        // Each lot movement, with the bucket's balance after it.
        let mut running: std::collections::BTreeMap<&str, rust_decimal::Decimal> = line
            .delta
            .iter()
            .map(|(b, d)| (b.as_str(), line.running[b] - d))
            .collect();
        for m in &line.lots {
            let balance = running.entry(m.bucket.name()).or_default();
            let units = m.balance_delta();
            *balance += units;
            let amount = if m.kind.adds() { m.value } else { -m.value };
            rows.push(common(
                m.bucket.name(),
                &kind_text(&m.kind),
                &m.lot,
                units.to_string(),
                m.unit_price.to_string(),
                amount.to_string(),
                balance.to_string(),
            ));
        }
        if let Some(sab) = &line.sab {
            rows.push(common(
                "",
                "sab_converted",
                "",
                sab.incidents.to_string(),
                sab.value_per_incident.to_string(),
                sab.amount.to_string(),
                String::new(),
            ));
        }
        for (kind, amount) in &line.billables {
            rows.push(common(
                "",
                kind,
                "",
                String::new(),
                String::new(),
                amount.to_string(),
                String::new(),
            ));
        }
        if rows.is_empty() {
            rows.push(common(
                "",
                "",
                "",
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ));
        }
        for row in rows {
            writer.write_record(row)?;
        }
    }
    for roll in &statement.roll_forward {
        let (_, value) = money_of(&statement.money_roll_forward, &roll.bucket);
        let check = if roll.reconciles {
            "reconciles"
        } else {
            "DOES NOT RECONCILE"
        };
        writer.write_record([
            contract,
            "closing",
            "",
            "",
            time_zone,
            "",
            "",
            &roll.bucket,
            "",
            "",
            &roll.movements.to_string(),
            "",
            &value.to_string(),
            currency,
            &roll.closing.to_string(),
            "",
            "",
            "",
            check,
        ])?;
    }
    writer.flush()?;
    Ok(())
}

fn write_table(statement: &Statement, out: &mut dyn Write) -> anyhow::Result<()> {
    let zone = zone(statement);
    let currency = statement.currency.as_str();
    writeln!(
        out,
        "Audit statement — contract {} ({}), {currency}, term {}..{}",
        statement.contract_id, statement.customer, statement.term_start, statement.term_end
    )?;
    writeln!(
        out,
        "Times in {} · money in {currency} · hours to 2 decimals, credits whole",
        statement.time_zone
    )?;
    let period = |t: &Option<chrono::DateTime<chrono::FixedOffset>>| {
        t.as_ref().map_or("—".to_owned(), |t| when(t, zone))
    };
    writeln!(
        out,
        "Period (effective time, from ≤ t < to): {} .. {}",
        period(&statement.from),
        period(&statement.to)
    )?;
    if let Some(known_at) = &statement.known_at {
        writeln!(
            out,
            "As issued at {} (only what was recorded by then)",
            when(known_at, zone)
        )?;
    }
    writeln!(
        out,
        "Built to log position {} (chain hash {})",
        statement.built_to_position, statement.built_to_hash
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Opening balances: {}",
        statement
            .opening
            .iter()
            .map(|(b, v)| format!("{b} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>6}  {:<21} {:<21} {:<25} {:<12} {:<30} running",
        "pos", "effective", "recorded", "event", "actor", "movement"
    )?;
    for line in &statement.lines {
        let movement = line
            .delta
            .iter()
            .map(|(b, d)| format!("{b} {d:+}"))
            .collect::<Vec<_>>()
            .join(", ");
        let running = line
            .delta
            .keys()
            .map(|b| format!("{b} {}", line.running[b]))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "{:>6}  {:<21} {:<21} {:<25} {:<12} {:<30} {}",
            line.position,
            when(&line.effective_at, zone),
            when(&line.recorded_at, zone),
            line.event_type,
            line.actor.as_deref().unwrap_or(""),
            movement,
            running
        )?;
        for lot in &line.lots {
            writeln!(out, "{:>8}lot: {}", "", lot_text(lot, currency))?;
        }
        if let Some(sab) = &line.sab {
            writeln!(out, "{:>8}{}", "", sab_text(sab, currency))?;
        }
        if let Some(undone) = &line.undoes {
            writeln!(out, "{:>8}{}", "", undone_text(undone))?;
        }
        for (kind, amount) in &line.billables {
            writeln!(out, "{:>8}billable: {kind} {amount} {currency}", "")?;
        }
        if let Some(reference) = &line.reference {
            writeln!(out, "{:>8}reference: {reference}", "")?;
        }
        if let Some(reason) = &line.reason {
            writeln!(out, "{:>8}reason: {reason}", "")?;
        }
    }
    writeln!(out)?;
    for (unit, totals) in [
        ("units", &statement.totals),
        (currency, &statement.totals_value),
    ] {
        writeln!(
            out,
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format!("totals ({unit})"),
            "purchased",
            "returned",
            "converted",
            "consumed",
            "fees",
            "forfeited"
        )?;
        for (bucket, t) in totals {
            writeln!(
                out,
                "{bucket:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                t.purchased, t.returned, t.converted, t.consumed, t.fees, t.forfeited
            )?;
        }
    }
    for (kind, amount) in &statement.billables {
        writeln!(out, "billable {kind}: {amount} {currency}")?;
    }
    if !statement.sab_years.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "SAB by support year ({currency}): committed, converted net of reversals, shortfall, adjustments, billable"
        )?;
        for year in &statement.sab_years {
            writeln!(
                out,
                "year {:<3} committed {} × {} = {}; converted {}; shortfall {}; adjustments {}; billable {}",
                year.support_year,
                year.committed_incidents,
                year.value_per_incident,
                year.committed,
                year.converted,
                year.shortfall
                    .map_or("not assessed".to_owned(), |s| s.to_string()),
                year.adjustments,
                year.billable
            )?;
            writeln!(out, "{:>9}{}", "", year.derivation)?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<18} {:>10} {:>10} {:>10}  {:<5} {:>14} {:>14} {:>14}  check",
        "roll-forward",
        "opening",
        "movements",
        "closing",
        "check",
        format!("opening {currency}"),
        format!("movements {currency}"),
        format!("closing {currency}")
    )?;
    for (roll, money) in statement
        .roll_forward
        .iter()
        .zip(&statement.money_roll_forward)
    {
        let check = |ok: bool| if ok { "ok" } else { "DOES NOT RECONCILE" };
        writeln!(
            out,
            "{:<18} {:>10} {:>10} {:>10}  {:<5} {:>14} {:>14} {:>14}  {}",
            roll.bucket,
            roll.opening,
            roll.movements,
            roll.closing,
            check(roll.reconciles),
            money.opening,
            money.movements,
            money.closing,
            check(money.reconciles)
        )?;
    }
    Ok(())
}

/// Prints billables (found here or answered by the service).
pub fn print_shortfalls(entries: &[BillableEntry], format: Format) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(&entries)?)?,
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record([
                "contract_id",
                "kind",
                "period",
                "amount",
                "currency",
                "event_id",
                "position",
                "effective_at",
                "derivation",
            ])?;
            for e in entries {
                writer.write_record([
                    e.contract_id.clone(),
                    e.kind.clone(),
                    e.period.clone(),
                    e.amount.to_string(),
                    e.currency.clone(),
                    e.event_id.clone(),
                    e.position.to_string(),
                    e.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    e.derivation.to_string(),
                ])?;
            }
            writer.flush()?;
        }
        Format::Table | Format::Html => {
            writeln!(
                out,
                "{:<10} {:<28} {:<8} {:>12} {:<4} {:>6}  derivation",
                "contract", "kind", "period", "amount", "cur", "pos"
            )?;
            for e in entries {
                writeln!(
                    out,
                    "{:<10} {:<28} {:<8} {:>12} {:<4} {:>6}  {}",
                    e.contract_id, e.kind, e.period, e.amount, e.currency, e.position, e.derivation
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rebuild(data: &Path) -> anyhow::Result<ExitCode> {
    let ledger = crate::open_ledger(data)?;
    let head = ledger.committed_position();
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "rebuilding [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let checkpoint = projections::rebuild_all(&ledger, &mut |position| bar.set_position(position))?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::float_arithmetic)] // a rate for people to read
    let rate = if seconds > 0.0 {
        head as f64 / seconds
    } else {
        0.0
    };
    println!(
        "rebuilt {} projections ({}) to position {} (hash {}) from {head} events in {seconds:.2} s ({rate:.0} events/s, one pass of the log)",
        projections::PERSISTED.len(),
        projections::PERSISTED.join(", "),
        checkpoint.position,
        ledger::hex(&checkpoint.hash),
    );
    Ok(ExitCode::SUCCESS)
}

fn decimals(map: &std::collections::BTreeMap<String, rust_decimal::Decimal>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Prints a replay (built here or answered by the service).
pub fn print_replay(
    steps: &[projections::disputes::ReplayStep],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for step in steps {
                writeln!(out, "{}", serde_json::to_string(step)?)?;
            }
        }
        Format::Csv => {
            // One row per event, a column per bucket's balance after it.
            let mut writer = csv::Writer::from_writer(&mut out);
            let mut header: Vec<String> = [
                "position",
                "version",
                "event_id",
                "event_type",
                "recorded_at",
                "effective_at",
            ]
            .map(str::to_owned)
            .to_vec();
            header.extend(
                schemas::Bucket::ALL
                    .iter()
                    .map(|b| format!("{}_after", b.name())),
            );
            header.push("billable_so_far".to_owned());
            writer.write_record(&header)?;
            for step in steps {
                let mut row = vec![
                    step.position.to_string(),
                    step.version.to_string(),
                    step.event_id.clone(),
                    step.event_type.clone(),
                    rfc3339(&step.recorded_at),
                    step.effective_at.as_ref().map(rfc3339).unwrap_or_default(),
                ];
                row.extend(schemas::Bucket::ALL.iter().map(|b| {
                    schemas::display::quantity(
                        *b,
                        step.balances.get(b.name()).copied().unwrap_or_default(),
                    )
                    .to_string()
                }));
                row.push(
                    step.billables
                        .values()
                        .sum::<rust_decimal::Decimal>()
                        .to_string(),
                );
                writer.write_record(&row)?;
            }
            writer.flush()?;
        }
        Format::Table | Format::Html => {
            writeln!(
                out,
                "{:>6} {:>4}  {:<25} {:<20} {:<20} balances after",
                "pos", "ver", "event", "recorded", "effective"
            )?;
            for step in steps {
                let effective = step
                    .effective_at
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:>6} {:>4}  {:<25} {:<20} {:<20} {}",
                    step.position,
                    step.version,
                    step.event_type,
                    step.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    effective,
                    decimals(&step.balances)
                )?;
                if !step.billables.is_empty() {
                    writeln!(
                        out,
                        "{:>13}billable so far: {}",
                        "",
                        decimals(&step.billables)
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a diff between two knowledge times.
pub fn print_diff(diff: &projections::disputes::Diff, format: Format) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let undone = |change: &projections::disputes::Change| {
        change.undoes.as_ref().map(undone_text).unwrap_or_default()
    };
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&diff)?)?,
        Format::Csv => {
            // One row per bucket an event moved (one row for an event that moved none).
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record([
                "contract_id",
                "position",
                "event_id",
                "event_type",
                "recorded_at",
                "effective_at",
                "bucket",
                "quantity",
                "amount",
                "billable",
                "undoes_event_id",
                "undoes_event_type",
                "reference",
                "reason",
            ])?;
            for change in &diff.changes {
                let billable = change
                    .billables
                    .values()
                    .sum::<rust_decimal::Decimal>()
                    .to_string();
                let mut buckets: Vec<(String, String, String)> = change
                    .delta
                    .iter()
                    .map(|(bucket, quantity)| {
                        let amount = change.delta_value.get(bucket).copied().unwrap_or_default();
                        (bucket.clone(), quantity.to_string(), amount.to_string())
                    })
                    .collect();
                if buckets.is_empty() {
                    buckets.push(Default::default());
                }
                for (bucket, quantity, amount) in buckets {
                    writer.write_record([
                        diff.contract_id.clone(),
                        change.position.to_string(),
                        change.event_id.clone(),
                        change.event_type.clone(),
                        rfc3339(&change.recorded_at),
                        change
                            .effective_at
                            .as_ref()
                            .map(rfc3339)
                            .unwrap_or_default(),
                        bucket,
                        quantity,
                        amount,
                        billable.clone(),
                        change
                            .undoes
                            .as_ref()
                            .map(|u| u.event_id.clone())
                            .unwrap_or_default(),
                        change
                            .undoes
                            .as_ref()
                            .map(|u| u.event_type.clone())
                            .unwrap_or_default(),
                        change.reference.clone().unwrap_or_default(),
                        change.reason.clone().unwrap_or_default(),
                    ])?;
                }
            }
            writer.flush()?;
        }
        Format::Table | Format::Html => {
            writeln!(
                out,
                "contract {}: known at {} → known at {}",
                diff.contract_id,
                diff.known_at_before.to_rfc3339(),
                diff.known_at_after.to_rfc3339()
            )?;
            writeln!(
                out,
                "  balances before: {}",
                decimals(&diff.balances_before)
            )?;
            writeln!(out, "  balances after:  {}", decimals(&diff.balances_after))?;
            writeln!(
                out,
                "  billables before: {}",
                decimals(&diff.billables_before)
            )?;
            writeln!(
                out,
                "  billables after:  {}",
                decimals(&diff.billables_after)
            )?;
            writeln!(
                out,
                "  {} event(s) recorded in between:",
                diff.changes.len()
            )?;
            for change in &diff.changes {
                let effective = change
                    .effective_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {:>6} {:<25} effective {effective:<26} {} {}",
                    change.position,
                    change.event_type,
                    decimals(&change.delta),
                    decimals(&change.billables)
                )?;
                if !change.delta_value.is_empty() {
                    writeln!(out, "{:>10}money: {}", "", decimals(&change.delta_value))?;
                }
                if change.undoes.is_some() {
                    writeln!(out, "{:>10}{}", "", undone(change))?;
                }
                if let Some(reference) = &change.reference {
                    writeln!(out, "{:>10}reference: {reference}", "")?;
                }
                if let Some(reason) = &change.reason {
                    writeln!(out, "{:>10}reason: {reason}", "")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints expiry notices with the money at risk.
pub fn print_notices(
    answer: &projections::query::NoticesAnswer,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let notices: Vec<_> = answer.notices.iter().cloned().map(shown_notice).collect();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(&notices)?)?,
        Format::Csv => {
            // One row per lot at risk (a bucket with nothing left: one row, no lot), numbers in
            // their own columns for a spreadsheet.
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record([
                "contract_id",
                "notice",
                "due_at",
                "term_end",
                "bucket",
                "lot",
                "would_be_forfeited",
                "unit_price",
                "value_at_risk",
                "currency",
                "event_id",
                "position",
            ])?;
            for n in &notices {
                for (bucket, balance) in &n.balances {
                    let lots: Vec<_> = n
                        .at_risk
                        .iter()
                        .filter(|lot| lot.bucket.name() == bucket)
                        .collect();
                    let rows: Vec<[String; 4]> = if lots.is_empty() {
                        let value = n.value_at_risk.get(bucket).map(ToString::to_string);
                        vec![[
                            String::new(),
                            balance.to_string(),
                            String::new(),
                            value.unwrap_or_default(),
                        ]]
                    } else {
                        lots.iter()
                            .map(|lot| {
                                [
                                    lot.lot.clone(),
                                    lot.quantity.to_string(),
                                    lot.unit_price.to_string(),
                                    lot.value.to_string(),
                                ]
                            })
                            .collect()
                    };
                    for [lot, quantity, unit_price, value] in rows {
                        writer.write_record([
                            n.contract_id.clone(),
                            n.notice.clone(),
                            n.due_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            n.term_end.to_string(),
                            bucket.clone(),
                            lot,
                            quantity,
                            unit_price,
                            value,
                            n.currency.clone().unwrap_or_default(),
                            n.event_id.clone(),
                            n.position.to_string(),
                        ])?;
                    }
                }
            }
            writer.flush()?;
        }
        Format::Table | Format::Html => {
            writeln!(
                out,
                "built to log position {} (chain hash {})",
                answer.built_to_position, answer.built_to_hash
            )?;
            writeln!(
                out,
                "{:<10} {:<17} {:<12} would be forfeited",
                "contract", "notice", "term end"
            )?;
            for n in &notices {
                let currency = n.currency.as_deref().unwrap_or("");
                let forfeited: Vec<String> = n
                    .balances
                    .iter()
                    .map(|(bucket, balance)| match n.value_at_risk.get(bucket) {
                        Some(value) => format!("{bucket} {balance} ({value} {currency})"),
                        None => format!("{bucket} {balance}"),
                    })
                    .collect();
                writeln!(
                    out,
                    "{:<10} {:<17} {:<12} {}",
                    n.contract_id,
                    n.notice,
                    n.term_end,
                    forfeited.join(", ")
                )?;
                for lot in &n.at_risk {
                    writeln!(
                        out,
                        "{:<41} lot {} {} {} × {} = {} {currency}",
                        "",
                        lot.bucket.name(),
                        lot.lot,
                        lot.quantity,
                        lot.unit_price,
                        lot.value
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A notice's figures as shown (`schemas::display`): quantities by their bucket, money in the
/// currency's minor units; each rounded once from the exact stored figure.
fn shown_notice(mut notice: projections::notices::Notice) -> projections::notices::Notice {
    use schemas::display;
    let currency = notice.currency.clone().unwrap_or_default();
    for (bucket, balance) in &mut notice.balances {
        *balance = display::quantity_named(bucket, *balance);
    }
    for value in notice.value_at_risk.values_mut() {
        *value = display::money(*value, &currency);
    }
    for lot in &mut notice.at_risk {
        lot.quantity = display::quantity(lot.bucket, lot.quantity);
        lot.value = display::money(lot.value, &currency);
    }
    notice
}

/// Prints `balance --detail`: quantities and money by kind and by lot, and billables, stamped
/// with the position and chain hash they were built to.
pub fn print_balance_detail(
    detail: &projections::query::BalanceDetail,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let balances = &detail.balances;
    let contract = balances.contract_id.as_str();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(detail)?)?,
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record([
                "contract_id",
                "bucket",
                "lot",
                "unit_price",
                "remaining",
                "kind",
                "quantity",
                "value",
                "currency",
            ])?;
            for (bucket, b) in &balances.buckets {
                for (lot, l) in &b.lots {
                    for (kind, quantity, value) in [
                        ("purchased", l.quantity.purchased, l.value.purchased),
                        ("returned", l.quantity.returned, l.value.returned),
                        ("converted", l.quantity.converted, l.value.converted),
                        ("consumed", l.quantity.consumed, l.value.consumed),
                        ("fees", l.quantity.fees, l.value.fees),
                        ("forfeited", l.quantity.forfeited, l.value.forfeited),
                    ] {
                        writer.write_record([
                            contract.to_owned(),
                            bucket.clone(),
                            lot.clone(),
                            l.unit_price.to_string(),
                            l.remaining.to_string(),
                            kind.to_owned(),
                            quantity.to_string(),
                            value.to_string(),
                            balances.currency.clone(),
                        ])?;
                    }
                }
            }
            writer.flush()?;
        }
        Format::Table | Format::Html => {
            writeln!(
                out,
                "contract {} ({}) — built to log position {} (chain hash {})",
                contract, balances.currency, detail.built_to_position, detail.built_to_hash
            )?;
            writeln!(
                out,
                "{:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "bucket / lot",
                "balance",
                "purchased",
                "returned",
                "converted",
                "consumed",
                "fees",
                "forfeited"
            )?;
            for (bucket, b) in &balances.buckets {
                let q = &b.quantity;
                writeln!(
                    out,
                    "{bucket:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    b.balance,
                    q.purchased,
                    q.returned,
                    q.converted,
                    q.consumed,
                    q.fees,
                    q.forfeited
                )?;
                for (lot, l) in &b.lots {
                    let v = &l.value;
                    writeln!(
                        out,
                        "  {lot:<6} @ {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                        l.unit_price,
                        l.remaining,
                        v.purchased,
                        v.returned,
                        v.converted,
                        v.consumed,
                        v.fees,
                        v.forfeited
                    )?;
                }
            }
            for (kind, amount) in &balances.billables {
                writeln!(out, "billable {kind}: {amount} {}", balances.currency)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
