//! `decide`: the rules of DOMAIN.md. Given a contract's state, the rate card, a command and the
//! time it arrives, it returns the events to append or a rejection. Pure and deterministic: no
//! IO and no clock; time arrives with the command (`effective_at`) or as `now`.

use chrono::{DateTime, Days, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use schemas::*;

use crate::calendar;
use crate::currency;
use crate::rejection::Rejection;
use crate::state::{ContractState, Lot, RateCard, Status};

/// An event `decide` wants appended, with its business time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The event.
    pub event: Event,
    /// Its effective time (stored in the envelope; `--as-of` reads it).
    pub effective_at: DateTime<Utc>,
}

fn decided(event: Event, effective_at: DateTime<Utc>) -> Decided {
    Decided {
        event,
        effective_at,
    }
}

/// R3: "rounded to the nearest whole credit, halves away from zero"; R6 fees likewise.
pub fn round_credits(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
}

/// R5: "minutes ÷ 60, rounded to 2 decimals, halves away from zero".
pub fn minutes_to_hours(minutes: i64) -> Decimal {
    (Decimal::from(minutes) / Decimal::from(60))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Contract ids become subject tokens and stream ids: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_contract_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decides a user command. See the module doc.
///
/// # Errors
/// A [`Rejection`] naming the broken rule; nothing is to be appended then.
pub fn decide(
    state: &ContractState,
    rates: &RateCard,
    command: &CommandEnvelope,
    now: DateTime<Utc>,
) -> Result<Vec<Decided>, Rejection> {
    if let Some(id) = command.body.contract_id()
        && !valid_contract_id(id)
    {
        return Err(Rejection::invalid(format!(
            "contract_id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    match &command.body {
        Command::OpenContract(open) => open_contract(state, open),
        Command::PublishRates(publish) => publish_rates(publish),
        Command::Purchase(purchase) => buy(state, purchase),
        Command::ConvertCredits(convert) => convert_credits(state, rates, convert),
        Command::CancelBooking(cancel) => cancel_booking(state, cancel),
        Command::RescheduleBooking(reschedule) => reschedule_booking(state, reschedule),
        Command::ExchangeBooking(exchange) => exchange_booking(state, rates, exchange),
        Command::ConvertSab(convert) => convert_sab(state, convert),
        Command::ConsumeHours(consume) => consume_hours(state, consume),
        Command::TerminateContract(command) => terminate(state, command),
        Command::Reverse(reverse) => reverse_event(state, reverse, command.reason.as_deref(), now),
    }
}

fn open_contract(state: &ContractState, open: &OpenContract) -> Result<Vec<Decided>, Rejection> {
    if state.status != Status::Unopened {
        return Err(Rejection::new(
            "contract_exists",
            "R1",
            format!(
                "contract {} is already open; a contract is opened once",
                open.contract_id
            ),
        ));
    }
    if open.customer.trim().is_empty() {
        return Err(Rejection::invalid("customer must not be empty"));
    }
    if open.term_start > open.term_end {
        return Err(Rejection::new(
            "invalid_term",
            "R1",
            format!(
                "term_start {} is after term_end {}; the term must satisfy start ≤ end",
                open.term_start, open.term_end
            ),
        ));
    }
    if !currency::is_iso_4217(&open.currency) {
        return Err(Rejection::new(
            "invalid_currency",
            "R1",
            format!(
                "{:?} is not an ISO 4217 currency code (e.g. USD, EUR)",
                open.currency
            ),
        ));
    }
    let zone: chrono_tz::Tz = open.time_zone.parse().map_err(|_| {
        Rejection::new(
            "invalid_time_zone",
            "R1",
            format!(
                "{:?} is not an IANA time zone (e.g. Europe/Berlin)",
                open.time_zone
            ),
        )
    })?;
    let fee_rate = open.cancellation_fee_rate.unwrap_or(Decimal::ONE);
    if fee_rate < Decimal::ZERO || fee_rate > Decimal::ONE {
        return Err(Rejection::new(
            "invalid_fee_rate",
            "R1",
            format!("cancellation_fee_rate {fee_rate} must be between 0 and 1 (0–100 %)"),
        ));
    }
    let mut years = std::collections::BTreeSet::new();
    for commitment in &open.sab_commitments {
        let year_start = calendar::support_year_start(open.term_start, commitment.year);
        if year_start.is_none_or(|start| start > open.term_end) {
            return Err(Rejection::new(
                "invalid_sab_commitment",
                "R1",
                format!(
                    "SAB commitment for support year {} lies outside the term {}..{}",
                    commitment.year, open.term_start, open.term_end
                ),
            ));
        }
        if !years.insert(commitment.year) {
            return Err(Rejection::new(
                "invalid_sab_commitment",
                "R1",
                format!("support year {} is committed twice", commitment.year),
            ));
        }
        if commitment.value_per_incident < Decimal::ZERO {
            return Err(Rejection::new(
                "invalid_sab_commitment",
                "R1",
                "value_per_incident must not be negative",
            ));
        }
    }
    let effective_at = open
        .effective_at
        .unwrap_or_else(|| calendar::local_midnight(zone, open.term_start));
    let mut holidays = open.holidays.clone();
    holidays.sort_unstable();
    holidays.dedup();
    Ok(vec![decided(
        Event::ContractOpened(ContractOpened {
            contract_id: open.contract_id.clone(),
            customer: open.customer.clone(),
            package: open.package,
            term_start: open.term_start,
            term_end: open.term_end,
            currency: open.currency.clone(),
            time_zone: open.time_zone.clone(),
            holidays,
            cancellation_fee_rate: fee_rate,
            sab_commitments: open.sab_commitments.clone(),
        }),
        effective_at,
    )])
}

fn publish_rates(publish: &PublishRates) -> Result<Vec<Decided>, Rejection> {
    if publish.rates.is_empty() {
        return Err(Rejection::invalid("rates must name at least one service"));
    }
    for (service, rate) in &publish.rates {
        if service.is_empty() || *rate <= Decimal::ZERO {
            return Err(Rejection::invalid(format!(
                "rate of {service:?} must be a positive number of credits, not {rate}"
            )));
        }
    }
    Ok(vec![decided(
        Event::RatesPublished(RatesPublished {
            effective_from: publish.effective_from,
            rates: publish.rates.clone(),
        }),
        publish.effective_from,
    )])
}

/// The terms of a contract that accepts commands, or why it does not.
fn active<'s>(
    state: &'s ContractState,
    contract_id: &str,
) -> Result<&'s ContractOpened, Rejection> {
    let other_contract = state
        .terms
        .as_ref()
        .is_some_and(|t| t.contract_id != contract_id);
    match state.status {
        _ if other_contract => Err(Rejection::new(
            "unknown_contract",
            "R1",
            format!("no contract {contract_id}; open it first with open_contract"),
        )),
        Status::Unopened => Err(Rejection::new(
            "unknown_contract",
            "R1",
            format!("no contract {contract_id}; open it first with open_contract"),
        )),
        Status::Expired => Err(Rejection::new(
            "contract_expired",
            "R8",
            format!(
                "contract {contract_id} expired at the end of its term; only reads are accepted"
            ),
        )),
        Status::Terminated => Err(Rejection::new(
            "contract_terminated",
            "R8",
            format!(
                "contract {contract_id} was terminated on {}; only reads are accepted",
                state
                    .terminated_on
                    .map_or_else(String::new, |d| d.to_string())
            ),
        )),
        Status::Active => Ok(state.terms.as_ref().expect("active contracts have terms")),
    }
}

fn zone(state: &ContractState) -> chrono_tz::Tz {
    state.zone.expect("opened contracts have a zone")
}

fn require_in_term(
    state: &ContractState,
    at: DateTime<Utc>,
    what: &str,
    rule: &'static str,
) -> Result<(), Rejection> {
    let terms = state.terms.as_ref().expect("opened");
    let date = calendar::local_date(zone(state), at);
    if date < terms.term_start || date > terms.term_end {
        return Err(Rejection::new(
            "outside_term",
            rule,
            format!(
                "{what} on {date} ({}) is outside the term {}..{}",
                terms.time_zone, terms.term_start, terms.term_end
            ),
        ));
    }
    Ok(())
}

fn require_positive(quantity: Decimal, what: &str) -> Result<(), Rejection> {
    if quantity <= Decimal::ZERO {
        return Err(Rejection::new(
            "invalid_quantity",
            "R2",
            format!("{what} must be greater than 0, not {quantity}"),
        ));
    }
    Ok(())
}

fn bucket_of(item: Item) -> Bucket {
    match item {
        Item::ProactiveCredits => Bucket::ProactiveCredits,
        Item::DseHours => Bucket::DseHours,
        Item::DasHours => Bucket::DasHours,
        Item::DeveloperAdvanced | Item::DeveloperPerformance => Bucket::AdmHours,
    }
}

fn package_name(package: Package) -> &'static str {
    match package {
        Package::Core => "core",
        Package::Advanced => "advanced",
        Package::Performance => "performance",
    }
}

const DAS_PACKAGE_HOURS: [u32; 4] = [200, 400, 800, 1600];
const DEVELOPER_ADVANCED_MIN_HOURS: u32 = 320;
const DEVELOPER_ADVANCED_MAX_HOURS: u32 = 800;
const DEVELOPER_PERFORMANCE_MIN_HOURS: u32 = 800;

fn buy(state: &ContractState, purchase: &Purchase) -> Result<Vec<Decided>, Rejection> {
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
                "invalid_quantity",
                "R2",
                format!("proactive credits are bought whole; {quantity} is not a whole number"),
            ));
        }
        Item::DseHours if quantity.normalize().scale() > 2 => {
            return Err(Rejection::new(
                "invalid_quantity",
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
                "invalid_package_size",
                "R2",
                format!(
                    "Digital Advisory Services come in packages of 200, 400, 800 or 1600 hours, not {quantity}"
                ),
            ));
        }
        Item::DeveloperAdvanced => {
            if package == Package::Core {
                return Err(Rejection::new(
                    "package_not_eligible",
                    "R2",
                    "Developer Advanced hours need an advanced or performance package; this contract is core",
                ));
            }
            if quantity.normalize().scale() > 2 {
                return Err(Rejection::new(
                    "invalid_quantity",
                    "R2",
                    format!("hours have at most 2 decimals; {quantity} has more"),
                ));
            }
            let total = state.developer_advanced_hours + quantity;
            if total > Decimal::from(DEVELOPER_ADVANCED_MAX_HOURS) {
                return Err(Rejection::new(
                    "developer_hours_out_of_range",
                    "R2",
                    format!(
                        "Developer Advanced hours must stay within 320–800 per contract; {} bought + {quantity} = {total} is above 800",
                        state.developer_advanced_hours
                    ),
                ));
            }
            if total < Decimal::from(DEVELOPER_ADVANCED_MIN_HOURS) && !purchase.custom_scope {
                return Err(Rejection::new(
                    "developer_hours_out_of_range",
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
                    "package_not_eligible",
                    "R2",
                    format!(
                        "Developer Performance hours need a performance package; this contract is {}",
                        package_name(package)
                    ),
                ));
            }
            if quantity.normalize().scale() > 2 {
                return Err(Rejection::new(
                    "invalid_quantity",
                    "R2",
                    format!("hours have at most 2 decimals; {quantity} has more"),
                ));
            }
            let total = state.developer_performance_hours + quantity;
            if total < Decimal::from(DEVELOPER_PERFORMANCE_MIN_HOURS) && !purchase.custom_scope {
                return Err(Rejection::new(
                    "developer_hours_out_of_range",
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

/// What one lot can give to the deduction being decided: what it held at the deduction's
/// effective time and every later one (R13), less what this decision took, plus what it gave
/// back.
struct LotShare {
    id: String,
    unit_price: Decimal,
    available: Decimal,
}

/// The lots of one bucket as a decision effective at one time sees them (R12, R13): only lots
/// bought at or before that time, each with what it can still give without going below zero at
/// any later effective time. A decision that moves several times (return, then fee) works on it.
struct LotBook {
    bucket: Bucket,
    lots: Vec<LotShare>,
}

impl LotBook {
    fn of(state: &ContractState, bucket: Bucket, at: DateTime<Utc>) -> LotBook {
        LotBook {
            bucket,
            lots: state
                .lots_in_order(bucket)
                .into_iter()
                .map(|lot: &Lot| LotShare {
                    id: lot.id.clone(),
                    unit_price: lot.unit_price,
                    available: lot.available_at(at),
                })
                .collect(),
        }
    }

    /// What the lots can give at the decision's effective time.
    fn balance(&self) -> Decimal {
        self.lots.iter().map(|lot| lot.available).sum()
    }

    /// R13: draws `quantity` oldest lot first. The caller checked the balance.
    fn draw(&mut self, quantity: Decimal, kind: MovementKind) -> Vec<Movement> {
        let mut left = quantity;
        let mut movements = Vec::new();
        for lot in &mut self.lots {
            if left.is_zero() {
                break;
            }
            let take = left.min(lot.available);
            if take.is_zero() {
                continue;
            }
            lot.available -= take;
            left -= take;
            movements.push(Movement {
                bucket: self.bucket,
                kind,
                lot: lot.id.clone(),
                quantity: take,
                unit_price: lot.unit_price,
                value: take * lot.unit_price,
            });
        }
        assert!(
            left.is_zero(),
            "drew more than the balance: the caller must check it"
        );
        movements
    }

    /// Gives back what `draws` took, to the same lots. Returned at the decision's effective
    /// time, the units are there at every later time too.
    fn give_back(&mut self, draws: &[Movement]) -> Vec<Movement> {
        draws
            .iter()
            .map(|draw| {
                let lot = self
                    .lots
                    .iter_mut()
                    .find(|lot| lot.id == draw.lot)
                    .expect("drawn lot exists");
                lot.available += draw.quantity;
                Movement {
                    kind: MovementKind::Returned,
                    ..draw.clone()
                }
            })
            .collect()
    }

    /// Forfeits everything left.
    fn forfeit_all(&mut self) -> Vec<Movement> {
        let balance = self.balance();
        self.draw(balance, MovementKind::Forfeited)
    }
}

/// R13: the balance at `at` cannot cover a deduction; says what was available then.
fn insufficient(
    state: &ContractState,
    bucket: Bucket,
    rule: &'static str,
    needed: Decimal,
    available: Decimal,
    at: DateTime<Utc>,
    what: &str,
) -> Rejection {
    let unit = if bucket == Bucket::ProactiveCredits {
        "credits"
    } else {
        "hours"
    };
    let local = at.with_timezone(&zone(state)).format("%Y-%m-%d %H:%M %Z");
    let now = state.balance(bucket);
    let later = if now > available {
        format!(
            " ({now} in all, but lots bought later or units used by later entries cannot pay for work at {local})"
        )
    } else {
        String::new()
    };
    Rejection::new(
        "insufficient_balance",
        rule,
        format!(
            "{what} needs {needed} {unit} but {} had {available} available at {local}{later}; {available} remain at that time",
            bucket.name()
        ),
    )
}

/// R7: proactive requests on advanced/performance contracts by term_end − 60 days.
fn require_before_request_deadline(
    state: &ContractState,
    at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if !state.is_advanced_or_performance() {
        return Ok(());
    }
    let terms = state.terms.as_ref().expect("opened");
    let deadline = calendar::request_deadline(terms.term_end);
    let date = calendar::local_date(zone(state), at);
    if date > deadline {
        return Err(Rejection::new(
            "request_deadline_passed",
            "R7",
            format!(
                "requests for proactive services on {} contracts must come by {deadline} (60 days before the term ends on {}); this one is dated {date}",
                package_name(terms.package),
                terms.term_end
            ),
        ));
    }
    Ok(())
}

struct Priced {
    rate: Decimal,
    rate_effective_from: DateTime<Utc>,
    unrounded: Decimal,
    credits: Decimal,
}

fn price(
    rates: &RateCard,
    service: &str,
    quantity: Decimal,
    at: DateTime<Utc>,
) -> Result<Priced, Rejection> {
    require_positive(quantity, "quantity")?;
    let (rate, rate_effective_from) = rates.rate_at(service, at).ok_or_else(|| {
        Rejection::new(
            "unknown_service",
            "R3",
            format!("no rate for service {service:?} is in force at {at}; publish_rates first"),
        )
    })?;
    let unrounded = rate * quantity;
    let credits = round_credits(unrounded);
    if credits.is_zero() {
        return Err(Rejection::new(
            "invalid_quantity",
            "R3",
            format!(
                "{quantity} × {rate} credits = {unrounded}, which rounds to 0 credits; book a larger quantity"
            ),
        ));
    }
    Ok(Priced {
        rate,
        rate_effective_from,
        unrounded,
        credits,
    })
}

fn require_new_booking(
    state: &ContractState,
    booking_id: &str,
    starts_at: DateTime<Utc>,
    requested_at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if booking_id.is_empty() {
        return Err(Rejection::invalid("booking_id must not be empty"));
    }
    if state.bookings.contains_key(booking_id) {
        return Err(Rejection::new(
            "booking_exists",
            "R3",
            format!("booking {booking_id} already exists; use a new booking id"),
        ));
    }
    require_start(state, starts_at, requested_at)
}

fn require_start(
    state: &ContractState,
    starts_at: DateTime<Utc>,
    requested_at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if starts_at <= requested_at {
        return Err(Rejection::new(
            "booking_in_past",
            "R3",
            format!(
                "a booking must start after the request; {starts_at} is not after {requested_at}"
            ),
        ));
    }
    let terms = state.terms.as_ref().expect("opened");
    let date = calendar::local_date(zone(state), starts_at);
    if date < terms.term_start || date > terms.term_end {
        return Err(Rejection::new(
            "booking_outside_term",
            "R3",
            format!(
                "a booking must start inside the term {}..{}; {date} is not",
                terms.term_start, terms.term_end
            ),
        ));
    }
    Ok(())
}

fn convert_credits(
    state: &ContractState,
    rates: &RateCard,
    convert: &ConvertCredits,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &convert.contract_id)?;
    require_in_term(state, convert.effective_at, "a credit conversion", "R3")?;
    require_before_request_deadline(state, convert.effective_at)?;
    require_new_booking(
        state,
        &convert.booking_id,
        convert.starts_at,
        convert.effective_at,
    )?;
    let priced = price(
        rates,
        &convert.service,
        convert.quantity,
        convert.effective_at,
    )?;
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, convert.effective_at);
    let balance = book.balance();
    if balance < priced.credits {
        return Err(insufficient(
            state,
            Bucket::ProactiveCredits,
            "R3",
            priced.credits,
            balance,
            convert.effective_at,
            &format!("converting {} × {}", convert.quantity, convert.service),
        ));
    }
    let movements = book.draw(priced.credits, MovementKind::Converted);
    Ok(vec![decided(
        Event::CreditsConverted(CreditsConverted {
            booking_id: convert.booking_id.clone(),
            service: convert.service.clone(),
            quantity: convert.quantity,
            rate: priced.rate,
            rate_effective_from: priced.rate_effective_from,
            credits_unrounded: priced.unrounded,
            credits: priced.credits,
            starts_at: convert.starts_at,
            movements,
        }),
        convert.effective_at,
    )])
}

/// A booking that can still change, or why not.
fn changeable_booking<'s>(
    state: &'s ContractState,
    booking_id: &str,
    at: DateTime<Utc>,
) -> Result<&'s crate::state::Booking, Rejection> {
    let booking = state.bookings.get(booking_id).ok_or_else(|| {
        Rejection::new(
            "unknown_booking",
            "R3",
            format!("no booking {booking_id} in this contract"),
        )
    })?;
    if !booking.active {
        return Err(Rejection::new(
            "booking_not_active",
            "R3",
            format!("booking {booking_id} was already cancelled or exchanged"),
        ));
    }
    if at >= booking.starts_at {
        return Err(Rejection::new(
            "booking_delivered",
            "R3",
            format!(
                "booking {booking_id} started at {} and counts as delivered; it can no longer be cancelled, rescheduled or exchanged",
                booking.starts_at
            ),
        ));
    }
    Ok(booking)
}

/// R6: (late?, fee rate applied, fee in credits).
fn cancellation_fee(
    state: &ContractState,
    booking: &crate::state::Booking,
    at: DateTime<Utc>,
) -> (bool, Decimal, Decimal) {
    let terms = state.terms.as_ref().expect("opened");
    let late = at > calendar::free_cancellation_deadline(zone(state), booking.starts_at);
    if late {
        let rate = terms.cancellation_fee_rate;
        (true, rate, round_credits(rate * booking.credits))
    } else {
        (false, Decimal::ZERO, Decimal::ZERO)
    }
}

fn cancel_booking(
    state: &ContractState,
    cancel: &CancelBooking,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &cancel.contract_id)?;
    require_in_term(state, cancel.effective_at, "a cancellation", "R6")?;
    let booking = changeable_booking(state, &cancel.booking_id, cancel.effective_at)?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, cancel.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, cancel.effective_at);
    let mut movements = book.give_back(&booking.draws);
    // The fee never exceeds the credits just returned (rate ≤ 100 %), so it is always covered.
    movements.extend(book.draw(fee_credits, MovementKind::Fee));
    Ok(vec![decided(
        Event::BookingCancelled(BookingCancelled {
            booking_id: cancel.booking_id.clone(),
            late,
            fee_rate,
            fee_credits,
            movements,
        }),
        cancel.effective_at,
    )])
}

fn reschedule_booking(
    state: &ContractState,
    reschedule: &RescheduleBooking,
) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &reschedule.contract_id)?;
    require_in_term(state, reschedule.effective_at, "a reschedule", "R6")?;
    let booking = changeable_booking(state, &reschedule.booking_id, reschedule.effective_at)?;
    require_start(state, reschedule.starts_at, reschedule.effective_at)?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, reschedule.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, reschedule.effective_at);
    let covered = fee_credits.min(book.balance());
    let uncovered = fee_credits - covered;
    let movements = book.draw(covered, MovementKind::Fee);
    let mut billables = Vec::new();
    if uncovered > Decimal::ZERO {
        // R6: "uncovered credits × the unit price of the credits' newest lot": the newest
        // purchase effective at or before the request that has not been reversed.
        let newest = state
            .lots_in_order(Bucket::ProactiveCredits)
            .into_iter()
            .rfind(|lot| !lot.reversed && lot.order.0 <= reschedule.effective_at)
            .map(|lot| lot.unit_price)
            .expect("a booking implies a credit lot bought before the request");
        billables.push(Billable {
            kind: BillableKind::UncoveredCancellationFee,
            period: reschedule.booking_id.clone(),
            amount: uncovered * newest,
            currency: terms.currency.clone(),
        });
    }
    Ok(vec![decided(
        Event::BookingRescheduled(BookingRescheduled {
            booking_id: reschedule.booking_id.clone(),
            previous_starts_at: booking.starts_at,
            starts_at: reschedule.starts_at,
            late,
            fee_rate,
            fee_credits,
            uncovered_credits: uncovered,
            movements,
            billables,
        }),
        reschedule.effective_at,
    )])
}

fn exchange_booking(
    state: &ContractState,
    rates: &RateCard,
    exchange: &ExchangeBooking,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &exchange.contract_id)?;
    require_in_term(state, exchange.effective_at, "an exchange", "R3")?;
    require_before_request_deadline(state, exchange.effective_at)?;
    let booking = changeable_booking(state, &exchange.booking_id, exchange.effective_at)?;
    require_new_booking(
        state,
        &exchange.new_booking_id,
        exchange.starts_at,
        exchange.effective_at,
    )?;
    let priced = price(
        rates,
        &exchange.service,
        exchange.quantity,
        exchange.effective_at,
    )?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, exchange.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, exchange.effective_at);
    let mut movements = book.give_back(&booking.draws);
    let needed = fee_credits + priced.credits;
    let balance = book.balance();
    if balance < needed {
        return Err(insufficient(
            state,
            Bucket::ProactiveCredits,
            "R3",
            needed,
            balance,
            exchange.effective_at,
            &format!(
                "exchanging {} for {} × {} (fee {fee_credits} + {} credits, after the old booking's {} return)",
                exchange.booking_id,
                exchange.quantity,
                exchange.service,
                priced.credits,
                booking.credits
            ),
        ));
    }
    movements.extend(book.draw(fee_credits, MovementKind::Fee));
    movements.extend(book.draw(priced.credits, MovementKind::Converted));
    Ok(vec![decided(
        Event::BookingExchanged(BookingExchanged {
            booking_id: exchange.booking_id.clone(),
            new_booking_id: exchange.new_booking_id.clone(),
            service: exchange.service.clone(),
            quantity: exchange.quantity,
            rate: priced.rate,
            rate_effective_from: priced.rate_effective_from,
            credits_unrounded: priced.unrounded,
            credits: priced.credits,
            starts_at: exchange.starts_at,
            late,
            fee_rate,
            fee_credits,
            movements,
        }),
        exchange.effective_at,
    )])
}

fn convert_sab(state: &ContractState, convert: &ConvertSab) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &convert.contract_id)?;
    require_in_term(state, convert.effective_at, "a SAB conversion", "R4")?;
    if convert.incidents == 0 {
        return Err(Rejection::new(
            "invalid_quantity",
            "R4",
            "incidents must be at least 1",
        ));
    }
    if convert.value_per_incident < Decimal::ZERO {
        return Err(Rejection::new(
            "invalid_quantity",
            "R4",
            "value_per_incident must not be negative",
        ));
    }
    let date = calendar::local_date(zone(state), convert.effective_at);
    let support_year = calendar::support_year_of(terms.term_start, date).expect("inside the term");
    let amount = Decimal::from(convert.incidents) * convert.value_per_incident;
    let mut events = vec![decided(
        Event::SabConverted(SabConverted {
            incidents: convert.incidents,
            value_per_incident: convert.value_per_incident,
            amount,
            currency: terms.currency.clone(),
            applied_to: convert.applied_to,
            support_year,
        }),
        convert.effective_at,
    )];
    events.extend(sab_adjustment(
        state,
        support_year,
        amount,
        convert.effective_at,
    ));
    Ok(events)
}

/// R9: once support year `year` is assessed, its billable total (shortfall plus adjustments)
/// equals `max(0, committed − converted)`. After `converted_change` (a conversion, or minus a
/// reversed one), the adjustment that keeps it so, if any. It takes effect at `at` or at the
/// assessment, whichever is later, so the billable never moves before it was assessed.
fn sab_adjustment(
    state: &ContractState,
    year: u32,
    converted_change: Decimal,
    at: DateTime<Utc>,
) -> Option<Decided> {
    let standing = *state.shortfall_billable.get(&year)?;
    let terms = state.terms.as_ref().expect("opened");
    let commitment = terms.sab_commitments.iter().find(|c| c.year == year)?;
    let committed = Decimal::from(commitment.incidents) * commitment.value_per_incident;
    let converted = state.sab_converted.get(&year).copied().unwrap_or_default() + converted_change;
    let target = (committed - converted).max(Decimal::ZERO);
    let adjustment = target - standing;
    if adjustment.is_zero() {
        return None;
    }
    let assessed_at = shortfall_due_at(state, year)?;
    Some(decided(
        Event::SabShortfallAdjusted(SabShortfallAdjusted {
            support_year: year,
            converted_amount: converted_change,
            billables: vec![Billable {
                kind: BillableKind::SabShortfallAdjustment,
                period: format!("year-{year}"),
                amount: adjustment,
                currency: terms.currency.clone(),
            }],
        }),
        at.max(assessed_at),
    ))
}

/// R9: when support year `year`'s shortfall falls due (00:00 contract time, year start + 30).
fn shortfall_due_at(state: &ContractState, year: u32) -> Option<DateTime<Utc>> {
    let terms = state.terms.as_ref()?;
    let year_start = calendar::support_year_start(terms.term_start, year)?;
    Some(calendar::local_midnight(
        zone(state),
        year_start + Days::new(30),
    ))
}

fn consume_hours(state: &ContractState, consume: &ConsumeHours) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &consume.contract_id)?;
    if consume.bucket == Bucket::ProactiveCredits {
        return Err(Rejection::new(
            "invalid_bucket",
            "R5",
            "hours are consumed from dse_hours, das_hours or adm_hours; credits are converted with convert_credits",
        ));
    }
    if consume.ended_at <= consume.started_at {
        return Err(Rejection::invalid(format!(
            "ended_at {} must be after started_at {}",
            consume.ended_at, consume.started_at
        )));
    }
    let whole_minute =
        |at: DateTime<Utc>| at.timestamp() % 60 == 0 && at.timestamp_subsec_nanos() == 0;
    if !whole_minute(consume.started_at) || !whole_minute(consume.ended_at) {
        return Err(Rejection::invalid(
            "started_at and ended_at are whole minutes (R5 counts minutes)",
        ));
    }
    // R5: work starts on a term date and ends at or before the end of the term (00:00 contract
    // time on the day after term_end, that instant included).
    require_in_term(state, consume.started_at, "work", "R5")?;
    let term_over = calendar::local_midnight(zone(state), terms.term_end + Days::new(1));
    if consume.ended_at > term_over {
        return Err(Rejection::new(
            "outside_term",
            "R5",
            format!(
                "work ending at {} is after the end of the term ({}, 00:00 {} on the day after {})",
                consume.ended_at, term_over, terms.time_zone, terms.term_end
            ),
        ));
    }
    if consume.bucket == Bucket::DseHours
        && let Some(why) = calendar::business_hours_violation(
            zone(state),
            &terms.holidays,
            consume.started_at,
            consume.ended_at,
        )
    {
        return Err(Rejection::new("outside_business_hours", "R5", why));
    }
    let minutes = (consume.ended_at - consume.started_at).num_minutes();
    let hours = minutes_to_hours(minutes);
    // R5: the hours are delivered at the end of the work, so that is when they are paid for.
    let mut book = LotBook::of(state, consume.bucket, consume.ended_at);
    let balance = book.balance();
    if balance < hours {
        return Err(insufficient(
            state,
            consume.bucket,
            "R5",
            hours,
            balance,
            consume.ended_at,
            &format!("{minutes} minutes of work"),
        ));
    }
    let movements = book.draw(hours, MovementKind::Consumed);
    Ok(vec![decided(
        Event::HoursConsumed(HoursConsumed {
            bucket: consume.bucket,
            started_at: consume.started_at,
            ended_at: consume.ended_at,
            minutes: u32::try_from(minutes)
                .map_err(|_| Rejection::invalid("the interval is too long"))?,
            hours,
            movements,
        }),
        consume.ended_at,
    )])
}

/// R15, R13: every lot that still holds something, oldest first per bucket, with its money value.
fn lots_at_risk(state: &ContractState) -> Vec<schemas::LotAtRisk> {
    Bucket::ALL
        .into_iter()
        .flat_map(|bucket| {
            state
                .lots_in_order(bucket)
                .into_iter()
                .filter(|lot| lot.remaining > Decimal::ZERO)
                .map(move |lot| schemas::LotAtRisk {
                    bucket,
                    lot: lot.id.clone(),
                    quantity: lot.remaining,
                    unit_price: lot.unit_price,
                    value: lot.remaining * lot.unit_price,
                })
        })
        .collect()
}

/// R8: everything the lots can give at `at` (what they still hold then and at every later time).
fn forfeit_everything(state: &ContractState, at: DateTime<Utc>) -> Vec<Movement> {
    Bucket::ALL
        .into_iter()
        .flat_map(|bucket| LotBook::of(state, bucket, at).forfeit_all())
        .collect()
}

fn terminate(
    state: &ContractState,
    terminate: &TerminateContract,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &terminate.contract_id)?;
    require_in_term(state, terminate.effective_at, "a termination", "R8")?;
    // R8, R12: the termination forfeits what the lots hold at its effective time. Activity already
    // recorded at a later effective time (a purchase, a deduction, an assessment) would outlive
    // the contract's end: its lots never forfeited, a later reversal forfeiting units before they
    // existed. Such a backdated termination is refused; terminate at or after that activity.
    let latest = state
        .recorded
        .values()
        .filter(|recorded| !matches!(recorded.event, Event::ExpiryNoticeIssued(_)))
        .map(|recorded| recorded.effective_at)
        .max();
    if let Some(latest) = latest
        && latest > terminate.effective_at
    {
        let local = |at: DateTime<Utc>| at.with_timezone(&zone(state)).format("%Y-%m-%d %H:%M %Z");
        return Err(Rejection::new(
            "termination_before_activity",
            "R8",
            format!(
                "a termination effective {} would precede activity recorded effective {}; \
                 terminate at or after {}, or reverse that activity first",
                local(terminate.effective_at),
                local(latest),
                local(latest)
            ),
        ));
    }
    let date = calendar::local_date(zone(state), terminate.effective_at);
    Ok(vec![
        decided(
            Event::ContractTerminated(ContractTerminated {
                termination_date: date,
            }),
            terminate.effective_at,
        ),
        // R8: "DSE ends with the contract": every balance, DSE included, in the same append.
        decided(
            Event::BalancesForfeited(BalancesForfeited {
                cause: ForfeitureCause::Termination,
                forfeited_at: terminate.effective_at,
                movements: forfeit_everything(state, terminate.effective_at),
            }),
            terminate.effective_at,
        ),
    ])
}

fn reverse_event(
    state: &ContractState,
    reverse: &Reverse,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Decided>, Rejection> {
    if state.status == Status::Unopened {
        return Err(Rejection::new(
            "unknown_contract",
            "R1",
            format!("no contract {}", reverse.contract_id),
        ));
    }
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Rejection::new(
                "reason_required",
                "R11",
                "a reversal must give a reason (the command's \"reason\" field)",
            )
        })?;
    let original = state.recorded.get(&reverse.event_id).ok_or_else(|| {
        Rejection::new(
            "unknown_event",
            "R11",
            format!(
                "no event {} in contract {}",
                reverse.event_id, reverse.contract_id
            ),
        )
    })?;
    if original.event_type == "event_reversed" {
        return Err(Rejection::new(
            "reversal_of_reversal",
            "R11",
            "a reversal cannot be reversed; record the correct event instead",
        ));
    }
    if state.reversed.contains(&reverse.event_id) {
        return Err(Rejection::new(
            "already_reversed",
            "R11",
            format!(
                "event {} was already reversed; an event is reversed at most once",
                reverse.event_id
            ),
        ));
    }
    match &original.event {
        Event::Purchased(purchased) => {
            let touched = state.recorded.iter().any(|(id, recorded)| {
                *id != reverse.event_id && recorded.movements.iter().any(|m| m.lot == purchased.lot)
            });
            if touched {
                return Err(Rejection::new(
                    "lot_in_use",
                    "R11",
                    format!(
                        "lot {} has been drawn from; a purchase is reversed only while its lot is untouched",
                        purchased.lot
                    ),
                ));
            }
        }
        Event::CreditsConverted(converted) => {
            let booking = state.bookings.get(&converted.booking_id);
            if !booking.is_some_and(|b| b.active) {
                return Err(Rejection::new(
                    "booking_not_active",
                    "R11",
                    format!(
                        "booking {} was cancelled or exchanged since; reverse that first is not supported, record a correction instead",
                        converted.booking_id
                    ),
                ));
            }
        }
        Event::HoursConsumed(_) | Event::SabConverted(_) => {}
        other => {
            return Err(Rejection::new(
                "not_reversible",
                "R11",
                format!(
                    "{} events cannot be reversed; purchases, conversions, SAB conversions and hour consumption can",
                    other.type_name()
                ),
            ));
        }
    }
    let negate = |m: &Movement| Movement {
        quantity: -m.quantity,
        value: -m.value,
        ..m.clone()
    };
    let movements: Vec<Movement> = original.movements.iter().map(negate).collect();
    let billables = original
        .billables
        .iter()
        .map(|b| Billable {
            amount: -b.amount,
            ..b.clone()
        })
        .collect();
    let mut events = vec![decided(
        Event::EventReversed(EventReversed {
            reversed_event_id: reverse.event_id.clone(),
            reversed_type: original.event_type.to_owned(),
            reason: reason.to_owned(),
            movements: movements.clone(),
            billables,
        }),
        original.effective_at,
    )];
    // R9, R11: the value leaves its support year; an assessed year's billable rises again.
    if let Event::SabConverted(converted) = &original.event {
        events.extend(sab_adjustment(
            state,
            converted.support_year,
            -converted.amount,
            original.effective_at,
        ));
    }
    // R11: after the term, whatever the reversal returns to a bucket is forfeited with it.
    if matches!(state.status, Status::Expired | Status::Terminated) {
        let returned: Vec<Movement> = movements
            .iter()
            .filter(|m| m.balance_delta() > Decimal::ZERO)
            .map(|m| Movement {
                kind: MovementKind::Forfeited,
                quantity: m.balance_delta(),
                value: m.balance_delta() * m.unit_price,
                ..m.clone()
            })
            .collect();
        if !returned.is_empty() {
            // Forfeited at the end, or when the units come back if that is later: a lot is never
            // forfeited before it holds them (R12 by effective time).
            let forfeited_at = state.ended_at.unwrap_or(now).max(original.effective_at);
            events.push(decided(
                Event::BalancesForfeited(BalancesForfeited {
                    cause: ForfeitureCause::ReversalAfterTerm,
                    forfeited_at,
                    movements: returned,
                }),
                forfeited_at,
            ));
        }
    }
    Ok(events)
}

/// A time-driven command (R8–R10, R15), appended by the scheduler with a derived id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeDriven {
    /// R15: an expiry notice (`90`, `60`, `30`, `7` days before, or `request_deadline`).
    Notice {
        /// Which notice.
        notice: String,
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// R9: assess a support year's SAB shortfall.
    AssessShortfall {
        /// Support year.
        year: u32,
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// R8: forfeit everything at the end of the term.
    Forfeit {
        /// When it is due.
        due_at: DateTime<Utc>,
    },
}

impl TimeDriven {
    /// When it is due.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self {
            TimeDriven::Notice { due_at, .. }
            | TimeDriven::AssessShortfall { due_at, .. }
            | TimeDriven::Forfeit { due_at } => *due_at,
        }
    }

    /// R14: the id derived from its inputs, so a retried scheduler cannot append it twice.
    pub fn command_id(&self, state: &ContractState) -> String {
        let terms = state.terms.as_ref().expect("opened");
        match self {
            TimeDriven::Notice { notice, .. } => format!("notice:{}:{notice}", terms.contract_id),
            TimeDriven::AssessShortfall { year, .. } => {
                format!("shortfall:{}:year-{year}", terms.contract_id)
            }
            TimeDriven::Forfeit { .. } => {
                format!("forfeit:{}:{}", terms.contract_id, terms.term_end)
            }
        }
    }
}

/// R10: the time-driven commands of a contract due at `now` and not yet carried out, in due
/// order (notices, then assessments, then forfeiture at the same instant).
pub fn due(state: &ContractState, now: DateTime<Utc>) -> Vec<TimeDriven> {
    let Some(terms) = &state.terms else {
        return Vec::new();
    };
    let zone = zone(state);
    let expiry = calendar::local_midnight(zone, terms.term_end + Days::new(1));
    let still_running_at = |at: DateTime<Utc>| match state.status {
        Status::Active => true,
        _ => state.ended_at.is_some_and(|ended| at < ended),
    };
    let mut due = Vec::new();
    if state.status == Status::Active {
        let mut notices: Vec<(String, chrono::NaiveDate)> = [90u64, 60, 30, 7]
            .iter()
            .filter_map(|days| {
                terms
                    .term_end
                    .checked_sub_days(Days::new(*days))
                    .map(|d| (days.to_string(), d))
            })
            .collect();
        if state.is_advanced_or_performance() {
            notices.push((
                "request_deadline".into(),
                calendar::request_deadline(terms.term_end),
            ));
        }
        for (notice, date) in notices {
            let due_at = calendar::local_midnight(zone, date);
            if date >= terms.term_start && due_at <= now && !state.notices.contains(&notice) {
                due.push((0, TimeDriven::Notice { notice, due_at }));
            }
        }
    }
    for commitment in &terms.sab_commitments {
        let Some(due_at) = shortfall_due_at(state, commitment.year) else {
            continue;
        };
        // R9: no assessment falls due at or after the contract's expiry or termination.
        if due_at <= now
            && due_at < expiry
            && still_running_at(due_at)
            && !state.shortfall_billable.contains_key(&commitment.year)
        {
            due.push((
                1,
                TimeDriven::AssessShortfall {
                    year: commitment.year,
                    due_at,
                },
            ));
        }
    }
    if state.status == Status::Active && expiry <= now {
        due.push((2, TimeDriven::Forfeit { due_at: expiry }));
    }
    due.sort_by_key(|(order, command)| (command.due_at(), *order));
    due.into_iter().map(|(_, command)| command).collect()
}

/// Decides a time-driven command against the state as folded now.
///
/// # Errors
/// `not_due` when it was already carried out or no longer applies.
pub fn decide_time_driven(
    state: &ContractState,
    command: &TimeDriven,
) -> Result<Vec<Decided>, Rejection> {
    let terms = state
        .terms
        .as_ref()
        .ok_or_else(|| Rejection::new("unknown_contract", "R10", "no such contract"))?;
    let not_due = || Rejection::new("not_due", "R10", "already carried out or no longer due");
    match command {
        TimeDriven::Notice { notice, due_at } => {
            if state.status != Status::Active || state.notices.contains(notice) {
                return Err(not_due());
            }
            let balances = Bucket::ALL
                .into_iter()
                .map(|bucket| (bucket.name().to_owned(), state.balance(bucket)))
                .collect();
            Ok(vec![decided(
                Event::ExpiryNoticeIssued(ExpiryNoticeIssued {
                    notice: notice.clone(),
                    term_end: terms.term_end,
                    balances,
                    at_risk: lots_at_risk(state),
                    currency: Some(terms.currency.clone()),
                }),
                *due_at,
            )])
        }
        TimeDriven::AssessShortfall { year, due_at } => {
            let expiry = calendar::local_midnight(zone(state), terms.term_end + Days::new(1));
            let ended_before = state.ended_at.is_some_and(|ended| *due_at >= ended);
            if state.shortfall_billable.contains_key(year) || *due_at >= expiry || ended_before {
                return Err(not_due());
            }
            let commitment = terms
                .sab_commitments
                .iter()
                .find(|c| c.year == *year)
                .ok_or_else(not_due)?;
            let committed_amount =
                Decimal::from(commitment.incidents) * commitment.value_per_incident;
            let converted_amount = state.sab_converted.get(year).copied().unwrap_or_default();
            let shortfall = (committed_amount - converted_amount).max(Decimal::ZERO);
            let billables = if shortfall > Decimal::ZERO {
                vec![Billable {
                    kind: BillableKind::SabShortfall,
                    period: format!("year-{year}"),
                    amount: shortfall,
                    currency: terms.currency.clone(),
                }]
            } else {
                Vec::new()
            };
            Ok(vec![decided(
                Event::SabShortfallAssessed(SabShortfallAssessed {
                    support_year: *year,
                    year_start: calendar::support_year_start(terms.term_start, *year)
                        .expect("committed years are in the term"),
                    committed_incidents: commitment.incidents,
                    committed_value_per_incident: commitment.value_per_incident,
                    committed_amount,
                    converted_amount,
                    shortfall,
                    billables,
                }),
                *due_at,
            )])
        }
        TimeDriven::Forfeit { due_at } => {
            if state.status != Status::Active {
                return Err(not_due());
            }
            Ok(vec![decided(
                Event::BalancesForfeited(BalancesForfeited {
                    cause: ForfeitureCause::Expiry,
                    forfeited_at: *due_at,
                    movements: forfeit_everything(state, *due_at),
                }),
                *due_at,
            )])
        }
    }
}
