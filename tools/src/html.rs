//! The audit statement as a printable HTML page with an inline SVG burn-down chart per bucket:
//! one file, no external assets, fit for a browser's print dialog. Presentation only: every
//! number comes from `projections::audit::Statement`.

// Pixel coordinates are floats; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use projections::audit::Statement;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use schemas::MovementKind;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CHART_WIDTH: f64 = 680.0;
const CHART_HEIGHT: f64 = 190.0;
const MARGIN_LEFT: f64 = 64.0;
// Room for the last month tick's label, centred on the right edge.
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 10.0;
const MARGIN_BOTTOM: f64 = 30.0;

/// 00:00 on a `YYYY-MM-DD` date in the contract's zone.
fn day_start(date: &str, zone: Tz) -> DateTime<Utc> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|d| projections::time::midnight(d, zone))
        .unwrap_or_default()
}

/// The first of every month from `start` to `end`, in `zone`: the chart's time ticks.
fn month_ticks(start: DateTime<Utc>, end: DateTime<Utc>, zone: Tz) -> Vec<DateTime<Utc>> {
    let local = start.with_timezone(&zone).date_naive();
    let mut month = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("a first");
    let mut ticks = Vec::new();
    while let Some(t) = Some(projections::time::midnight(month, zone)).filter(|t| *t <= end) {
        if t >= start {
            ticks.push(t);
        }
        month = month
            .checked_add_months(chrono::Months::new(1))
            .expect("a next month");
    }
    ticks
}

/// A round step for about four balance ticks up to `max` (1, 2 or 5 × a power of ten).
fn balance_step(max: f64) -> f64 {
    let raw = (max / 4.0).max(1.0);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * power)
}

/// A step chart of one bucket's balance over the period, by effective time, in the table's
/// order (effective time, then position), with a mark per movement coloured by kind, ticks on
/// the first of each month and on the balance axis.
fn burn_down(statement: &Statement, bucket: &str) -> Option<String> {
    let zone = crate::views::zone(statement);
    let lines: Vec<&projections::audit::StatementLine> = statement
        .lines
        .iter()
        .filter(|l| l.delta.contains_key(bucket))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let start = statement
        .from
        .map_or_else(|| day_start(&statement.term_start, zone), |t| t.to_utc());
    let end = statement.to.map_or_else(
        || day_start(&statement.term_end, zone) + chrono::Duration::days(1),
        |t| t.to_utc(),
    );
    let mut points: Vec<(DateTime<Utc>, Decimal, &'static str)> =
        vec![(start, statement.opening[bucket], "opening")];
    for line in lines {
        let kind = line
            .lots
            .iter()
            .find(|m| m.bucket.name() == bucket)
            .map(|m| match m.kind {
                MovementKind::Purchased => "purchased",
                MovementKind::Consumed => "consumed",
                MovementKind::Converted => "converted",
                MovementKind::Fee => "fee",
                MovementKind::Forfeited => "forfeited",
                MovementKind::Returned => "returned",
            })
            .unwrap_or("returned");
        points.push((line.effective_at.to_utc(), line.running[bucket], kind));
    }
    let top = points
        .iter()
        .map(|p| p.1.to_f64().unwrap_or(0.0))
        .fold(1.0, f64::max);
    let step = balance_step(top);
    let max = (top / step).ceil() * step;
    let span = (end - start).num_seconds().max(1) as f64;
    let plot_width = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let axis_y = CHART_HEIGHT - MARGIN_BOTTOM;
    let x = |t: DateTime<Utc>| {
        MARGIN_LEFT + ((t - start).num_seconds() as f64 / span).clamp(0.0, 1.0) * plot_width
    };
    let y = |v: f64| MARGIN_TOP + (1.0 - v / max) * (axis_y - MARGIN_TOP);
    let mut path = String::new();
    let mut previous: Option<f64> = None;
    for (t, v, _) in &points {
        let (px, py) = (x(*t), y(v.to_f64().unwrap_or(0.0)));
        match previous {
            None => write!(path, "M{px:.1},{py:.1}").ok(),
            Some(prev_y) => write!(path, " L{px:.1},{prev_y:.1} L{px:.1},{py:.1}").ok(),
        };
        previous = Some(py);
    }
    if let Some(last_y) = previous {
        write!(path, " L{:.1},{last_y:.1}", x(end)).ok();
    }
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{bucket} balance over the period">"##
    );
    // The balance axis: gridlines and a label at each step.
    let mut value = 0.0;
    while value <= max + step / 2.0 {
        let py = y(value);
        write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{value}</text>"##,
            CHART_WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 4.0,
            py + 3.0,
        )
        .ok();
        value += step;
    }
    // The time axis: a tick on the first of each month (contract time).
    let ticks = month_ticks(start, end, zone);
    let label_every = ticks.len().div_ceil(12).max(1);
    for (index, tick) in ticks.iter().enumerate() {
        let px = x(*tick);
        write!(
            svg,
            r##"<line x1="{px:.1}" y1="{axis_y}" x2="{px:.1}" y2="{:.1}" stroke="#999"/>"##,
            axis_y + 4.0
        )
        .ok();
        if index % label_every == 0 {
            write!(
                svg,
                r##"<text x="{px:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                axis_y + 15.0,
                tick.with_timezone(&zone).format("%b %Y")
            )
            .ok();
        }
    }
    write!(
        svg,
        r##"<line x1="{MARGIN_LEFT}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="#999"/><line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{axis_y}" stroke="#999"/>"##,
        CHART_WIDTH - MARGIN_RIGHT
    )
    .ok();
    write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end" fill="#555">{}</text>"##,
        CHART_WIDTH - MARGIN_RIGHT,
        CHART_HEIGHT - 2.0,
        escape(&statement.time_zone)
    )
    .ok();
    write!(
        svg,
        r##"<path d="{path}" fill="none" stroke="#1f4e79" stroke-width="1.5"/>"##
    )
    .ok();
    for (t, v, kind) in points.iter().skip(1) {
        let colour = match *kind {
            "purchased" => "#2e7d32",
            "consumed" | "converted" => "#1565c0",
            "fee" => "#ef6c00",
            "forfeited" => "#c62828",
            _ => "#6a1b9a",
        };
        write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{} {kind} → {v}</title></circle>"##,
            x(*t),
            y(v.to_f64().unwrap_or(0.0)),
            t.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z")
        )
        .ok();
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// The whole page: A4 portrait when printed (the movements table repeats its header on each page
/// and no row is split), the chart and the table in the same order.
pub fn statement_html(statement: &Statement) -> String {
    use crate::views::{lot_text, sab_text, undone_text, when};
    let zone = crate::views::zone(statement);
    let currency = statement.currency.as_str();
    let mut page = String::new();
    let title = format!(
        "Audit statement — {} ({})",
        statement.contract_id, statement.customer
    );
    let period = |t: &Option<chrono::DateTime<chrono::FixedOffset>>, open: &str| {
        t.as_ref().map_or(open.to_owned(), |t| when(t, zone))
    };
    write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
@page {{ size: A4 portrait; margin: 12mm; }}
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 11px; margin: 24px; color: #222; max-width: 186mm; }}
h1 {{ font-size: 17px; }} h2 {{ font-size: 13px; margin-top: 18px; }} h3 {{ font-size: 12px; margin: 10px 0 2px; }}
table {{ border-collapse: collapse; margin: 6px 0; width: 100%; }} th, td {{ border: 1px solid #ccc; padding: 2px 4px; vertical-align: top; }}
th {{ background: #f2f2f2; text-align: left; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.t {{ white-space: nowrap; }} .id {{ font-family: monospace; font-size: 7px; color: #555; word-break: break-all; }}
.meta {{ color: #555; }} .bad {{ color: #c62828; font-weight: bold; }} .legend span {{ margin-right: 12px; }}
svg.chart {{ width: 100%; height: auto; max-width: 180mm; }}
@media print {{ body {{ margin: 0; font-size: 9px; }} thead {{ display: table-header-group; }} tr, svg {{ page-break-inside: avoid; break-inside: avoid; }} h2 {{ page-break-after: avoid; }} }}
</style></head><body>
<h1>{}</h1>
<p class="meta">Currency {} · term {} .. {} · times in {}<br>
Period (effective time, from ≤ t &lt; to): {} .. {}{}<br>
Built to log position {} · chain hash <code>{}</code></p>
"#,
        escape(&title),
        escape(&title),
        escape(currency),
        statement.term_start,
        statement.term_end,
        escape(&statement.time_zone),
        period(&statement.from, "start"),
        period(&statement.to, "end"),
        statement.known_at.as_ref().map_or(String::new(), |k| format!(
            "<br>As issued at {} (only what was recorded by then)",
            when(k, zone)
        )),
        statement.built_to_position,
        statement.built_to_hash,
    )
    .ok();
    page.push_str("<h2>Balances over the period</h2>\n<p class=\"legend\"><span style=\"color:#2e7d32\">● purchase</span><span style=\"color:#1565c0\">● consumption / conversion</span><span style=\"color:#ef6c00\">● fee</span><span style=\"color:#c62828\">● forfeiture</span><span style=\"color:#6a1b9a\">● return</span></p>\n");
    for bucket in statement.opening.keys() {
        if let Some(svg) = burn_down(statement, bucket) {
            write!(page, "<h3>{}</h3>\n{svg}\n", escape(bucket)).ok();
        }
    }
    page.push_str("<h2>Opening balances</h2>\n<table><tr>");
    for bucket in statement.opening.keys() {
        write!(page, "<th>{}</th>", escape(bucket)).ok();
    }
    page.push_str("</tr><tr>");
    for value in statement.opening.values() {
        write!(page, "<td class=\"n\">{value}</td>").ok();
    }
    page.push_str("</tr></table>\n<h2>Movements (by effective time)</h2>\n<table><thead><tr><th>pos</th><th>effective</th><th>recorded</th><th>event</th><th>actor · reference · reason</th><th>change</th><th>running</th><th>lots, SAB, billables ({})</th></tr></thead><tbody>\n".replace("{}", &escape(currency)).as_str());
    for line in &statement.lines {
        let change = line
            .delta
            .iter()
            .map(|(b, d)| format!("{} {d:+}", escape(b)))
            .collect::<Vec<_>>()
            .join("<br>");
        let running = line
            .delta
            .keys()
            .map(|b| format!("{} {}", escape(b), line.running[b]))
            .collect::<Vec<_>>()
            .join("<br>");
        let mut money: Vec<String> = line
            .lots
            .iter()
            .map(|m| escape(&lot_text(m, currency)))
            .collect();
        money.extend(line.sab.iter().map(|sab| escape(&sab_text(sab, currency))));
        money.extend(line.undoes.iter().map(|u| escape(&undone_text(u))));
        money.extend(
            line.billables
                .iter()
                .map(|(k, v)| format!("billable {} {v} {}", escape(k), escape(currency))),
        );
        let who = [&line.actor, &line.reference, &line.reason]
            .into_iter()
            .flatten()
            .map(|t| escape(t))
            .collect::<Vec<_>>()
            .join(" · ");
        writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}<br><span class=\"id\">{}</span></td><td>{who}</td><td class=\"n\">{change}</td><td class=\"n\">{running}</td><td>{}</td></tr>",
            line.position,
            when(&line.effective_at, zone),
            when(&line.recorded_at, zone),
            escape(&line.event_type),
            escape(&line.event_id),
            money.join("<br>"),
        )
        .ok();
    }
    page.push_str("</tbody></table>\n");
    for (heading, totals) in [
        ("Totals in units".to_owned(), &statement.totals),
        (format!("Totals in {currency}"), &statement.totals_value),
    ] {
        write!(page, "<h2>{}</h2>\n<table><tr><th>bucket</th><th>purchased</th><th>returned</th><th>converted</th><th>consumed</th><th>fees</th><th>forfeited</th></tr>\n", escape(&heading)).ok();
        for (bucket, t) in totals {
            writeln!(
                page,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(bucket), t.purchased, t.returned, t.converted, t.consumed, t.fees, t.forfeited
            )
            .ok();
        }
        page.push_str("</table>\n");
    }
    if !statement.billables.is_empty() {
        page.push_str("<h2>Billable amounts in the period</h2>\n<table><tr><th>kind</th><th>amount</th></tr>\n");
        for (kind, amount) in &statement.billables {
            writeln!(
                page,
                "<tr><td>{}</td><td class=\"n\">{amount} {}</td></tr>",
                escape(kind),
                escape(currency)
            )
            .ok();
        }
        page.push_str("</table>\n");
    }
    if !statement.sab_years.is_empty() {
        write!(page, "<h2>SAB by support year ({})</h2>\n<table><tr><th>year</th><th>committed</th><th>converted (net)</th><th>shortfall</th><th>adjustments</th><th>billable</th><th>derivation</th></tr>\n", escape(currency)).ok();
        for year in &statement.sab_years {
            writeln!(
                page,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{} × {} = {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                year.support_year,
                year.committed_incidents,
                year.value_per_incident,
                year.committed,
                year.converted,
                year.shortfall.map_or("not assessed".to_owned(), |s| s.to_string()),
                year.adjustments,
                year.billable,
                escape(&year.derivation)
            )
            .ok();
        }
        page.push_str("</table>\n");
    }
    write!(page, "<h2>Roll-forward</h2>\n<table><tr><th>bucket</th><th>opening</th><th>movements</th><th>closing</th><th>check</th><th>opening {c}</th><th>movements {c}</th><th>closing {c}</th><th>check</th></tr>\n", c = escape(currency)).ok();
    let check = |ok: bool| {
        if ok {
            "ok".to_owned()
        } else {
            "<span class=\"bad\">DOES NOT RECONCILE</span>".to_owned()
        }
    };
    for (roll, money) in statement
        .roll_forward
        .iter()
        .zip(&statement.money_roll_forward)
    {
        writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&roll.bucket), roll.opening, roll.movements, roll.closing, check(roll.reconciles),
            money.opening, money.movements, money.closing, check(money.reconciles)
        )
        .ok();
    }
    page.push_str("</table>\n</body></html>\n");
    page
}
