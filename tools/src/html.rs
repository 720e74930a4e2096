//! The audit statement as a printable HTML page with an inline SVG burn-down chart per bucket:
//! one file, no external assets, fit for a browser's print dialog. Presentation only: every
//! number comes from `projections::audit::Statement`.

// Pixel coordinates are floats; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use projections::audit::Statement;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 180.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 24.0;

fn day_start(date: &str) -> DateTime<Utc> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .unwrap_or_default()
}

/// A step chart of one bucket's balance over the term, by effective time, with a mark per
/// movement coloured by kind.
fn burn_down(statement: &Statement, bucket: &str) -> Option<String> {
    let mut points: Vec<(DateTime<Utc>, Decimal, &'static str)> = Vec::new();
    let mut lines: Vec<&projections::audit::StatementLine> = statement
        .lines
        .iter()
        .filter(|l| l.delta.contains_key(bucket))
        .collect();
    if lines.is_empty() {
        return None;
    }
    lines.sort_by_key(|l| (l.effective_at, l.position));
    let mut balance = statement.opening[bucket];
    let start = statement
        .from
        .unwrap_or_else(|| day_start(&statement.term_start));
    let end = statement
        .to
        .unwrap_or_else(|| day_start(&statement.term_end) + chrono::Duration::days(1));
    points.push((start, balance, "opening"));
    for line in lines {
        balance += line.delta[bucket];
        let kind = line
            .lots
            .iter()
            .find(|m| m.bucket.name() == bucket)
            .map(|m| {
                serde_json::to_value(m.kind)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default();
        let kind: &'static str = match kind.as_str() {
            "purchased" => "purchased",
            "consumed" => "consumed",
            "converted" => "converted",
            "fee" => "fee",
            "forfeited" => "forfeited",
            _ => "returned",
        };
        points.push((line.effective_at, balance, kind));
    }
    let max = points
        .iter()
        .map(|p| p.1)
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE)
        .to_f64()
        .unwrap_or(1.0);
    let span = (end - start).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        MARGIN_LEFT
            + ((t - start).num_seconds() as f64 / span).clamp(0.0, 1.0)
                * (CHART_WIDTH - MARGIN_LEFT - 10.0)
    };
    let y = |v: Decimal| {
        10.0 + (1.0 - v.to_f64().unwrap_or(0.0) / max) * (CHART_HEIGHT - MARGIN_BOTTOM - 10.0)
    };
    let mut path = String::new();
    let mut previous: Option<f64> = None;
    for (t, v, _) in &points {
        let (px, py) = (x(*t), y(*v));
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
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{bucket} balance over the term">"##
    );
    let axis_y = CHART_HEIGHT - MARGIN_BOTTOM;
    write!(
        svg,
        r##"<line x1="{MARGIN_LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#999"/>"##,
        CHART_WIDTH - 10.0
    )
    .ok();
    write!(
        svg,
        r##"<line x1="{MARGIN_LEFT}" y1="10" x2="{MARGIN_LEFT}" y2="{axis_y}" stroke="#999"/>"##
    )
    .ok();
    write!(
        svg,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
        MARGIN_LEFT - 4.0,
        14.0,
        max
    )
    .ok();
    write!(
        svg,
        r##"<text x="{}" y="{axis_y}" font-size="10" text-anchor="end">0</text>"##,
        MARGIN_LEFT - 4.0
    )
    .ok();
    write!(
        svg,
        r##"<text x="{MARGIN_LEFT}" y="{}" font-size="10">{}</text>"##,
        CHART_HEIGHT - 8.0,
        start.format("%Y-%m-%d")
    )
    .ok();
    write!(
        svg,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
        CHART_WIDTH - 10.0,
        CHART_HEIGHT - 8.0,
        end.format("%Y-%m-%d")
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
        write!(svg, r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{kind} → {v}</title></circle>"##, x(*t), y(*v)).ok();
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// The whole page.
pub fn statement_html(statement: &Statement) -> String {
    let mut page = String::new();
    let title = format!(
        "Audit statement — {} ({})",
        statement.contract_id, statement.customer
    );
    write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 12px; margin: 24px; color: #222; }}
h1 {{ font-size: 18px; }} h2 {{ font-size: 14px; margin-top: 20px; }}
table {{ border-collapse: collapse; margin: 8px 0; }} th, td {{ border: 1px solid #ccc; padding: 2px 6px; vertical-align: top; }}
th {{ background: #f2f2f2; text-align: left; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.meta {{ color: #555; }} .bad {{ color: #c62828; font-weight: bold; }} .legend span {{ margin-right: 12px; }}
@media print {{ body {{ margin: 0; }} tr {{ page-break-inside: avoid; }} }}
</style></head><body>
<h1>{}</h1>
<p class="meta">Currency {} · term {} .. {} · period (effective time) {} .. {}<br>
Built to log position {} · chain hash <code>{}</code></p>
"#,
        escape(&title),
        escape(&title),
        escape(&statement.currency),
        statement.term_start,
        statement.term_end,
        statement.from.map_or("start".into(), |t| t.to_rfc3339()),
        statement.to.map_or("end".into(), |t| t.to_rfc3339()),
        statement.built_to_position,
        statement.built_to_hash,
    )
    .ok();
    page.push_str("<h2>Balances over the term</h2>\n<p class=\"legend\"><span style=\"color:#2e7d32\">● purchase</span><span style=\"color:#1565c0\">● consumption / conversion</span><span style=\"color:#ef6c00\">● fee</span><span style=\"color:#c62828\">● forfeiture</span><span style=\"color:#6a1b9a\">● return</span></p>\n");
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
    page.push_str("</tr></table>\n<h2>Movements</h2>\n<table><tr><th>pos</th><th>recorded</th><th>effective</th><th>event</th><th>actor</th><th>reference</th><th>reason</th><th>change</th><th>running</th><th>lots (money)</th><th>billable</th><th>event id</th></tr>\n");
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
        let lots = line
            .lots
            .iter()
            .map(|m| {
                let kind = serde_json::to_value(m.kind).unwrap_or_default();
                format!(
                    "{} {} {} × {} = {}",
                    kind.as_str().unwrap_or_default(),
                    escape(&m.lot),
                    m.quantity,
                    m.unit_price,
                    m.value
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let billable = line
            .billables
            .iter()
            .map(|(k, v)| format!("{} {v}", escape(k)))
            .collect::<Vec<_>>()
            .join("<br>");
        let text = |t: &Option<String>| t.as_deref().map(escape).unwrap_or_default();
        writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{change}</td><td class=\"n\">{running}</td><td>{lots}</td><td class=\"n\">{billable}</td><td><code>{}</code></td></tr>",
            line.position,
            line.recorded_at.format("%Y-%m-%d %H:%M:%S"),
            line.effective_at.format("%Y-%m-%d %H:%M"),
            escape(&line.event_type),
            text(&line.actor),
            text(&line.reference),
            text(&line.reason),
            escape(&line.event_id),
        )
        .ok();
    }
    page.push_str("</table>\n");
    for (heading, totals) in [
        ("Totals in units", &statement.totals),
        ("Totals in money", &statement.totals_value),
    ] {
        write!(page, "<h2>{heading}</h2>\n<table><tr><th>bucket</th><th>purchased</th><th>returned</th><th>converted</th><th>consumed</th><th>fees</th><th>forfeited</th></tr>\n").ok();
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
        page.push_str("<h2>Billable amounts</h2>\n<table><tr><th>kind</th><th>amount</th></tr>\n");
        for (kind, amount) in &statement.billables {
            writeln!(
                page,
                "<tr><td>{}</td><td class=\"n\">{amount} {}</td></tr>",
                escape(kind),
                escape(&statement.currency)
            )
            .ok();
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Roll-forward</h2>\n<table><tr><th>bucket</th><th>opening</th><th>movements</th><th>closing</th><th>check</th></tr>\n");
    for roll in &statement.roll_forward {
        let check = if roll.reconciles {
            "ok".to_owned()
        } else {
            "<span class=\"bad\">DOES NOT RECONCILE</span>".to_owned()
        };
        writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{check}</td></tr>",
            escape(&roll.bucket), roll.opening, roll.movements, roll.closing
        )
        .ok();
    }
    page.push_str("</table>\n</body></html>\n");
    page
}
