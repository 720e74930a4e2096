//! R2 purchases: what may be bought, in which sizes, on which packages.

use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::rejection::{Code, Rejection};
use crate::state::ContractState;

pub(crate) const DAS_PACKAGE_HOURS: [u32; 4] = [200, 400, 800, 1600];
pub(crate) const DEVELOPER_ADVANCED_MIN_HOURS: u32 = 320;
pub(crate) const DEVELOPER_ADVANCED_MAX_HOURS: u32 = 800;
pub(crate) const DEVELOPER_PERFORMANCE_MIN_HOURS: u32 = 800;

pub(crate) fn buy(state: &ContractState, purchase: &Purchase) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &purchase.contract_id)?;
    require_in_term(state, purchase.effective_at, "a purchase", "R2")?;
    require_positive(purchase.quantity, "quantity")?;
    if purchase.unit_price < Decimal::ZERO {
        return Err(Rejection::invalid(format!(
            "unit_price must not be negative, not {}",
            purchase.unit_price
        )));
    }
    let quantity = purchase.quantity;
    let package = terms.package;
    match purchase.item {
        Item::ProactiveCredits if !quantity.fract().is_zero() => {
            return Err(Rejection::new(
                Code::InvalidQuantity,
                "R2",
                format!("proactive credits are bought whole; {quantity} is not a whole number"),
            ));
        }
        Item::DseHours if quantity.normalize().scale() > 2 => {
            return Err(Rejection::new(
                Code::InvalidQuantity,
                "R2",
                format!("DSE hours have at most 2 decimals; {quantity} has more"),
            ));
        }
        Item::DasHours
            if !DAS_PACKAGE_HOURS
                .iter()
                .any(|size| Decimal::from(*size) == quantity) =>
        {
            return Err(Rejection::new(
                Code::InvalidPackageSize,
                "R2",
                format!(
                    "Digital Advisory Services come in packages of 200, 400, 800 or 1600 hours, not {quantity}"
                ),
            ));
        }
        Item::DeveloperAdvanced => {
            if package == Package::Core {
                return Err(Rejection::new(
                    Code::PackageNotEligible,
                    "R2",
                    "Developer Advanced hours need an advanced or performance package; this contract is core",
                ));
            }
            if quantity.normalize().scale() > 2 {
                return Err(Rejection::new(
                    Code::InvalidQuantity,
                    "R2",
                    format!("hours have at most 2 decimals; {quantity} has more"),
                ));
            }
            let total = state.developer_advanced_hours + quantity;
            if total > Decimal::from(DEVELOPER_ADVANCED_MAX_HOURS) {
                return Err(Rejection::new(
                    Code::DeveloperHoursOutOfRange,
                    "R2",
                    format!(
                        "Developer Advanced hours must stay within 320–800 per contract; {} bought + {quantity} = {total} is above 800",
                        state.developer_advanced_hours
                    ),
                ));
            }
            if total < Decimal::from(DEVELOPER_ADVANCED_MIN_HOURS) && !purchase.custom_scope {
                return Err(Rejection::new(
                    Code::DeveloperHoursOutOfRange,
                    "R2",
                    format!(
                        "Developer Advanced hours must total at least 320 per contract ({total} after this purchase) unless the purchase is a custom scope (custom_scope: true)"
                    ),
                ));
            }
        }
        Item::DeveloperPerformance => {
            if package != Package::Performance {
                return Err(Rejection::new(
                    Code::PackageNotEligible,
                    "R2",
                    format!(
                        "Developer Performance hours need a performance package; this contract is {}",
                        package_name(package)
                    ),
                ));
            }
            if quantity.normalize().scale() > 2 {
                return Err(Rejection::new(
                    Code::InvalidQuantity,
                    "R2",
                    format!("hours have at most 2 decimals; {quantity} has more"),
                ));
            }
            let total = state.developer_performance_hours + quantity;
            if total < Decimal::from(DEVELOPER_PERFORMANCE_MIN_HOURS) && !purchase.custom_scope {
                return Err(Rejection::new(
                    Code::DeveloperHoursOutOfRange,
                    "R2",
                    format!(
                        "Developer Performance hours must total at least 800 per contract ({total} after this purchase) unless the purchase is a custom scope (custom_scope: true)"
                    ),
                ));
            }
        }
        _ => {}
    }
    let bucket = bucket_of(purchase.item);
    let lot = format!("L{}", state.version + 1);
    Ok(vec![decided(
        Event::Purchased(Purchased {
            item: purchase.item,
            lot: lot.clone(),
            quantity,
            unit_price: purchase.unit_price,
            custom_scope: purchase.custom_scope,
            movements: vec![Movement {
                bucket,
                kind: MovementKind::Purchased,
                lot,
                quantity,
                unit_price: purchase.unit_price,
                value: quantity * purchase.unit_price,
            }],
        }),
        purchase.effective_at,
    )])
}
