//! Times as the read side takes and shows them: a contract's zone, a flag's time (RFC 3339, or a
//! date alone meaning 00:00 in the contract's zone that day), local times with their offset, and
//! the log's head as it stood at a recorded time (to reproduce what was known then).
//!
//! Not here: the calendar rules (business hours, edges), which live in `commands`.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use ledger::{Hash, Ledger};
use schemas::Event;

use crate::decode;

/// The time zone of `contract_id` (from its `contract_opened`), `None` for an unknown contract.
///
/// # Errors
/// When the log cannot be read.
pub fn zone_of(ledger: &Ledger, contract_id: &str) -> ledger::Result<Option<Tz>> {
    let first = ledger.read_stream(&schemas::contract_stream(contract_id), 1, 1)?;
    Ok(first.first().and_then(|event| match decode(event) {
        Event::ContractOpened(opened) => opened.time_zone.parse().ok(),
        _ => None,
    }))
}

/// 00:00 on `date` in `zone`. Where midnight does not exist (a daylight-saving gap) it is read
/// with the offset in force before the gap, so it moves forward by the gap's length (as R6 does);
/// where it occurs twice, the earlier one counts.
pub fn midnight(date: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    match zone.from_local_datetime(&naive).earliest() {
        Some(t) => t.to_utc(),
        None => {
            let before = zone
                .offset_from_utc_datetime(&(naive - Duration::days(1)))
                .fix();
            (naive - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// A time given to `flag`: RFC 3339 with an offset, or a date alone (`2026-04-01`), which means
/// 00:00 that day in `zone`.
///
/// # Errors
/// A message naming the flag and what would be right.
pub fn parse(flag: &str, text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(midnight(date, zone));
    }
    Err(format!(
        "{flag} {text:?} is neither an RFC 3339 time with an offset (2026-12-31T00:00:00Z) nor a \
         date (2026-12-31, 00:00 in the contract's time zone)"
    ))
}

/// `t` in `zone`, keeping the offset in force then.
pub fn local(t: DateTime<Utc>, zone: Tz) -> DateTime<FixedOffset> {
    t.with_timezone(&zone).fixed_offset()
}

/// The log's head as it stood at recorded time `known_at`: the last position recorded at or
/// before it, and that event's chain hash (position 0 and the zero hash before the first).
/// Recorded times never go backwards along the log, so this is a binary search.
///
/// # Errors
/// When the log cannot be read.
pub fn head_at(ledger: &Ledger, known_at: DateTime<Utc>) -> ledger::Result<(u64, Hash)> {
    let (head, head_hash) = ledger.head()?;
    let recorded = |position: u64| -> ledger::Result<Option<(DateTime<Utc>, Hash)>> {
        Ok(ledger
            .read_all(position, 1)?
            .into_iter()
            .next()
            .filter(|e| e.position == position)
            .map(|e| (e.recorded_at, e.hash)))
    };
    if head == 0 || recorded(head)?.is_some_and(|(t, _)| t <= known_at) {
        return Ok((head, head_hash));
    }
    // Invariant: everything at or before `low` was recorded by `known_at`; `high` was not.
    let (mut low, mut high) = (0, head);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match recorded(middle)? {
            Some((t, _)) if t <= known_at => low = middle,
            _ => high = middle,
        }
    }
    if low == 0 {
        return Ok((0, [0; 32]));
    }
    let hash = recorded(low)?.map_or([0; 32], |(_, hash)| hash);
    Ok((low, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_alone_is_midnight_in_the_contract_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            parse("--from", "2026-02-01", berlin).unwrap().to_rfc3339(),
            "2026-01-31T23:00:00+00:00"
        );
        assert_eq!(
            parse("--from", "2026-07-01", berlin).unwrap().to_rfc3339(),
            "2026-06-30T22:00:00+00:00"
        );
        assert_eq!(
            parse("--to", "2026-04-01T00:00:00Z", berlin)
                .unwrap()
                .to_rfc3339(),
            "2026-04-01T00:00:00+00:00"
        );
        let error = parse("--as-of", "April", berlin).unwrap_err();
        assert!(
            error.contains("--as-of") && error.contains("2026-12-31"),
            "{error}"
        );
    }

    #[test]
    fn a_midnight_in_a_gap_moves_forward_by_the_gap() {
        // Havana springs forward at 00:00 (to 01:00) on 2026-03-08.
        let havana: Tz = "America/Havana".parse().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        let t = midnight(date, havana);
        assert_eq!(local(t, havana).to_rfc3339(), "2026-03-08T01:00:00-04:00");
    }
}
