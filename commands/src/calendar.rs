//! Calendar rules judged in the contract's time zone: local dates, local midnights, support
//! years, business hours (R5), the 14-day fee edge (R6), the 60-day request deadline (R7).
//! Pure functions of their arguments; the wall clock is never read.

use chrono::Offset;
use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Utc, Weekday,
};
use chrono_tz::Tz;

/// The local calendar date of an instant.
pub fn local_date(zone: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}

/// The instant of a local wall-clock time. A time skipped by a DST jump moves forward by the
/// gap's length (R6: 02:30 in a 02:00→03:00 gap is 03:30): it is read with the offset in force
/// just before the gap. An ambiguous time takes the earlier instant.
pub fn local_instant(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Walk back a minute at a time to the last wall-clock time before the gap (gaps
            // are at most a few hours) and take its offset.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe -= chrono::Duration::minutes(1);
                if let Some(before) = zone.from_local_datetime(&probe).latest() {
                    let offset = chrono::Duration::seconds(i64::from(
                        before.offset().fix().local_minus_utc(),
                    ));
                    return Utc.from_utc_datetime(&(local - offset));
                }
            }
            panic!("no valid local time within a day before {local} in {zone}");
        }
    }
}

/// 00:00 contract time on `date`.
pub fn local_midnight(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    local_instant(zone, date.and_time(NaiveTime::MIN))
}

/// The start date of support year `year` (1-based): the term start or its anniversary.
pub fn support_year_start(term_start: NaiveDate, year: u32) -> Option<NaiveDate> {
    term_start.checked_add_months(Months::new(12 * (year.checked_sub(1)?)))
}

/// The support year a local date falls in (1-based), or `None` before the term.
pub fn support_year_of(term_start: NaiveDate, date: NaiveDate) -> Option<u32> {
    if date < term_start {
        return None;
    }
    let mut year = 1;
    while support_year_start(term_start, year + 1).is_some_and(|next| next <= date) {
        year += 1;
    }
    Some(year)
}

/// Business hours for DSE work (R5): 09:00–17:30, Monday–Friday.
pub const BUSINESS_OPEN: NaiveTime = NaiveTime::from_hms_opt(9, 0, 0).expect("valid time");
/// Closing time, inclusive for the end of work.
pub const BUSINESS_CLOSE: NaiveTime = NaiveTime::from_hms_opt(17, 30, 0).expect("valid time");

/// Why an interval is outside business hours, or `None` when it is inside.
pub fn business_hours_violation(
    zone: Tz,
    holidays: &[NaiveDate],
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
) -> Option<String> {
    let start = started_at.with_timezone(&zone);
    let end = ended_at.with_timezone(&zone);
    let day = start.date_naive();
    let place = format!("09:00–17:30 Mon–Fri in {zone}");
    if end.date_naive() != day {
        return Some(format!(
            "DSE hours are consumed {place}, starting and ending on the same day; {} and {} are different days",
            day,
            end.date_naive()
        ));
    }
    if matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        let weekday = if day.weekday() == Weekday::Sat {
            "Saturday"
        } else {
            "Sunday"
        };
        return Some(format!(
            "DSE hours are consumed {place}; {day} is a {weekday}"
        ));
    }
    if holidays.contains(&day) {
        return Some(format!(
            "DSE hours are consumed {place}; {day} is a contract holiday"
        ));
    }
    if start.time() < BUSINESS_OPEN || end.time() > BUSINESS_CLOSE {
        return Some(format!(
            "DSE hours are consumed {place}; {}–{} on {day} is outside them",
            start.time().format("%H:%M"),
            end.time().format("%H:%M")
        ));
    }
    None
}

/// R6: the start minus 14 calendar days at the same wall-clock time in the contract's zone. A
/// request later than this is late; exactly at it is free.
pub fn free_cancellation_deadline(zone: Tz, starts_at: DateTime<Utc>) -> DateTime<Utc> {
    let local = starts_at.with_timezone(&zone).naive_local();
    let earlier = local
        .checked_sub_days(Days::new(14))
        .expect("dates far from the calendar's edge");
    local_instant(zone, earlier)
}

/// R7: the last local date on which proactive services may be requested.
pub fn request_deadline(term_end: NaiveDate) -> NaiveDate {
    term_end
        .checked_sub_days(Days::new(60))
        .expect("dates far from the calendar's edge")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn support_years_count_from_anniversaries() {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let on = |y, m, d| support_year_of(start, NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(on(2026, 1, 1), Some(1));
        assert_eq!(on(2026, 12, 31), Some(1));
        assert_eq!(on(2027, 1, 1), Some(2));
        assert_eq!(on(2025, 12, 31), None);
    }

    #[test]
    fn fourteen_days_keep_the_wall_clock_across_dst() {
        // Berlin moves to summer time on 2026-03-29: 14 days before 2026-04-06 09:00 CEST is
        // 2026-03-23 09:00 CET, 337 hours earlier, not 336.
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        let start = at("2026-04-06T07:00:00Z");
        assert_eq!(
            free_cancellation_deadline(zone, start),
            at("2026-03-23T08:00:00Z")
        );
    }

    #[test]
    fn a_wall_clock_time_in_a_dst_gap_moves_forward_by_the_gap() {
        // Berlin skips 02:00–03:00 on 2026-03-29: 14 days before 2026-04-12 02:30 CEST is
        // 2026-03-29 02:30, which does not exist; it moves forward by the hour to 03:30 CEST.
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        let start = at("2026-04-12T00:30:00Z");
        assert_eq!(
            free_cancellation_deadline(zone, start),
            at("2026-03-29T01:30:00Z")
        );
    }
}
