//! How figures are shown: money in its currency's minor units (ISO 4217 exponent), hours with two
//! decimals, credits whole. One place, used by every view and format (table, CSV, HTML, JSON
//! strings), so a number reads the same wherever it is printed.
//!
//! Rounding here is for showing only, never for a stored figure: a view keeps the exact sums and
//! rounds each shown number once, halves away from zero (the rounding rule named in R3 and R5).
//!
//! Not here: any rule of the domain, any parsing.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::Bucket;

/// The ISO 4217 exponent (minor units) of `currency`: 2 unless the standard says otherwise.
pub fn minor_units(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        // ISO 4217 exponent 0.
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        // ISO 4217 exponent 3.
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        // ISO 4217 exponent 4.
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `value` rounded to `places`, halves away from zero, and written with exactly that many
/// decimals (`5` → `5.00`).
pub fn to_places(value: Decimal, places: u32) -> Decimal {
    let mut shown = value.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
    shown.rescale(places);
    // −0.00 reads as 0.00.
    if shown.is_zero() {
        shown.set_sign_positive(true);
    }
    shown
}

/// Money as shown: the currency's minor units, halves away from zero.
pub fn money(amount: Decimal, currency: &str) -> Decimal {
    to_places(amount, minor_units(currency))
}

/// Decimal places a bucket's quantities are shown with: credits whole, hours to two decimals.
pub fn quantity_places(bucket: Bucket) -> u32 {
    match bucket {
        Bucket::ProactiveCredits => 0,
        Bucket::DseHours | Bucket::DasHours | Bucket::AdmHours => 2,
    }
}

/// A quantity as shown, by its bucket.
pub fn quantity(bucket: Bucket, value: Decimal) -> Decimal {
    to_places(value, quantity_places(bucket))
}

/// A quantity as shown, by bucket name (`proactive_credits`, `dse_hours`, …); an unknown name
/// keeps the value as it is.
pub fn quantity_named(bucket: &str, value: Decimal) -> Decimal {
    match Bucket::ALL.iter().find(|b| b.name() == bucket) {
        Some(bucket) => quantity(*bucket, value),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn money_takes_the_currency_exponent_and_rounds_halves_away_from_zero() {
        for (amount, currency, shown) in [
            ("2000", "USD", "2000.00"),
            ("0.005", "EUR", "0.01"),
            ("-0.005", "EUR", "-0.01"),
            ("0.004", "EUR", "0.00"),
            ("-0.004", "EUR", "0.00"),
            ("1234.5", "JPY", "1235"),
            ("1234.4", "jpy", "1234"),
            ("1.0005", "KWD", "1.001"),
        ] {
            assert_eq!(
                money(d(amount), currency).to_string(),
                shown,
                "{amount} {currency}"
            );
        }
    }

    #[test]
    fn hours_show_two_decimals_and_credits_none() {
        assert_eq!(quantity(Bucket::DseHours, d("98")).to_string(), "98.00");
        assert_eq!(quantity(Bucket::AdmHours, d("0.335")).to_string(), "0.34");
        assert_eq!(
            quantity(Bucket::ProactiveCredits, d("15.00")).to_string(),
            "15"
        );
        assert_eq!(quantity_named("das_hours", d("-3.5")).to_string(), "-3.50");
    }
}
