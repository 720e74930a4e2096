//! The state `decide` reads: one contract folded from its events (`evolve`), and the rate card.
//! Pure: no IO, no clock. Every movement an event records is applied here exactly as recorded,
//! so replaying the same events always gives the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use schemas::{
    Billable, Bucket, ContractOpened, Event, KindTotals, Movement, MovementKind, Package,
};

/// Where the fold is: nothing yet, an open contract, or one that only accepts reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No `contract_opened` yet.
    Unopened,
    /// Accepting commands.
    Active,
    /// The term ended and balances were forfeited (R8).
    Expired,
    /// Terminated early (R8).
    Terminated,
}

/// An event's identity in its stream, as `evolve` needs it.
#[derive(Debug, Clone)]
pub struct EventMeta {
    /// The log's event id.
    pub event_id: String,
    /// Version in the contract's stream (lot ids are `L<version>`).
    pub version: u64,
    /// The business time.
    pub effective_at: DateTime<Utc>,
}

/// A purchase lot (R13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// `L<version>`.
    pub id: String,
    /// Drawdown order: oldest effective time, then stream position.
    pub order: (DateTime<Utc>, u64),
    /// Money per unit.
    pub unit_price: Decimal,
    /// Units bought.
    pub purchased: Decimal,
    /// Units left (after every event recorded so far).
    pub remaining: Decimal,
    /// Every change of the lot, `(effective time, stream version, units)`, sorted by effective
    /// time then version: what the lot held at any effective time (R12, R13).
    pub history: Vec<(DateTime<Utc>, u64, Decimal)>,
    /// Its purchase was reversed (R11): no longer the newest lot for pricing (R6).
    pub reversed: bool,
}

impl Lot {
    /// What a deduction effective at `at` may take from this lot (R13): the least the lot holds
    /// at `at` and at every later effective time, so a late entry never takes what a later
    /// deduction already used. A lot bought after `at` holds nothing at `at`, so gives nothing.
    /// The new deduction goes after every event already recorded at `at`.
    pub fn available_at(&self, at: DateTime<Utc>) -> Decimal {
        // The common case: nothing recorded after `at`, so what it holds now is what it held.
        if self.history.last().is_none_or(|(last, _, _)| *last <= at) {
            return self.remaining;
        }
        let split = self
            .history
            .partition_point(|(effective, _, _)| *effective <= at);
        let mut held: Decimal = self.history[..split]
            .iter()
            .map(|(_, _, units)| units)
            .sum();
        let mut least = held;
        for (_, _, units) in &self.history[split..] {
            held += units;
            least = least.min(held);
        }
        least.max(Decimal::ZERO)
    }

    /// What the lot held at effective time `at` (every change effective at or before it).
    pub fn held_at(&self, at: DateTime<Utc>) -> Decimal {
        self.history
            .iter()
            .take_while(|(effective, _, _)| *effective <= at)
            .map(|(_, _, units)| units)
            .sum()
    }
}

/// A booking made by converting credits (R3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// Service code.
    pub service: String,
    /// Credits it holds.
    pub credits: Decimal,
    /// When it starts (delivered from then on).
    pub starts_at: DateTime<Utc>,
    /// Booked, or given up.
    pub active: bool,
    /// The lots its credits came from.
    pub draws: Vec<Movement>,
    /// The event that created it.
    pub created_by: String,
}

/// What a reversal needs to know of an earlier event.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Wire type.
    pub event_type: &'static str,
    /// Movements it made.
    pub movements: Vec<Movement>,
    /// Billables it made.
    pub billables: Vec<Billable>,
    /// Its effective time.
    pub effective_at: DateTime<Utc>,
    /// The event itself.
    pub event: Event,
}

/// One contract, folded.
#[derive(Debug, Clone)]
pub struct ContractState {
    /// The stream's version: events folded so far.
    pub version: u64,
    /// Where the contract is.
    pub status: Status,
    /// The terms, once opened.
    pub terms: Option<ContractOpened>,
    /// The parsed zone of the terms.
    pub zone: Option<Tz>,
    /// Lots by bucket.
    pub lots: BTreeMap<Bucket, Vec<Lot>>,
    /// R12 totals by bucket.
    pub totals: BTreeMap<Bucket, KindTotals>,
    /// Bookings by id.
    pub bookings: BTreeMap<String, Booking>,
    /// SAB money converted, by support year.
    pub sab_converted: BTreeMap<u32, Decimal>,
    /// Assessed shortfalls: billable still standing, by support year.
    pub shortfall_billable: BTreeMap<u32, Decimal>,
    /// Developer Advanced hours bought.
    pub developer_advanced_hours: Decimal,
    /// Developer Performance hours bought.
    pub developer_performance_hours: Decimal,
    /// Every event by id, for reversals.
    pub recorded: HashMap<String, Recorded>,
    /// Ids of reversed events.
    pub reversed: BTreeSet<String>,
    /// Notices issued (R15).
    pub notices: BTreeSet<String>,
    /// When the contract was terminated.
    pub terminated_on: Option<NaiveDate>,
    /// When its balances were forfeited for good (expiry or termination).
    pub ended_at: Option<DateTime<Utc>>,
}

impl Default for ContractState {
    fn default() -> Self {
        ContractState {
            version: 0,
            status: Status::Unopened,
            terms: None,
            zone: None,
            lots: BTreeMap::new(),
            totals: BTreeMap::new(),
            bookings: BTreeMap::new(),
            sab_converted: BTreeMap::new(),
            shortfall_billable: BTreeMap::new(),
            developer_advanced_hours: Decimal::ZERO,
            developer_performance_hours: Decimal::ZERO,
            recorded: HashMap::new(),
            reversed: BTreeSet::new(),
            notices: BTreeSet::new(),
            terminated_on: None,
            ended_at: None,
        }
    }
}

impl ContractState {
    /// A bucket's balance.
    pub fn balance(&self, bucket: Bucket) -> Decimal {
        self.totals
            .get(&bucket)
            .map_or(Decimal::ZERO, KindTotals::net)
    }

    /// Lots of a bucket in drawdown order (oldest first).
    pub fn lots_in_order(&self, bucket: Bucket) -> Vec<&Lot> {
        let mut lots: Vec<&Lot> = self
            .lots
            .get(&bucket)
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        lots.sort_by_key(|lot| lot.order);
        lots
    }

    /// Applies one event. Panics when the event contradicts the state (a broken invariant:
    /// the log holds only events `decide` produced against this same fold).
    pub fn evolve(&mut self, event: &Event, meta: &EventMeta) {
        self.version = meta.version;
        match event {
            Event::ContractOpened(opened) => {
                assert_eq!(self.status, Status::Unopened, "contract opened twice");
                self.zone = Some(
                    opened
                        .time_zone
                        .parse()
                        .expect("zone validated before writing"),
                );
                self.terms = Some(opened.clone());
                self.status = Status::Active;
            }
            Event::RatesPublished(_) => {}
            Event::Purchased(purchased) => {
                let movement = &purchased.movements[0];
                self.lots.entry(movement.bucket).or_default().push(Lot {
                    id: purchased.lot.clone(),
                    order: (meta.effective_at, meta.version),
                    unit_price: purchased.unit_price,
                    purchased: purchased.quantity,
                    remaining: Decimal::ZERO,
                    history: Vec::new(),
                    reversed: false,
                });
                match purchased.item {
                    schemas::Item::DeveloperAdvanced => {
                        self.developer_advanced_hours += purchased.quantity
                    }
                    schemas::Item::DeveloperPerformance => {
                        self.developer_performance_hours += purchased.quantity
                    }
                    _ => {}
                }
            }
            Event::CreditsConverted(converted) => {
                self.bookings.insert(
                    converted.booking_id.clone(),
                    Booking {
                        service: converted.service.clone(),
                        credits: converted.credits,
                        starts_at: converted.starts_at,
                        active: true,
                        draws: converted.movements.clone(),
                        created_by: meta.event_id.clone(),
                    },
                );
            }
            Event::BookingCancelled(cancelled) => {
                let booking = self
                    .bookings
                    .get_mut(&cancelled.booking_id)
                    .expect("cancelled booking exists");
                booking.active = false;
            }
            Event::BookingRescheduled(rescheduled) => {
                let booking = self
                    .bookings
                    .get_mut(&rescheduled.booking_id)
                    .expect("rescheduled booking exists");
                booking.starts_at = rescheduled.starts_at;
            }
            Event::BookingExchanged(exchanged) => {
                let old = self
                    .bookings
                    .get_mut(&exchanged.booking_id)
                    .expect("exchanged booking exists");
                old.active = false;
                let draws = exchanged
                    .movements
                    .iter()
                    .filter(|m| m.kind == MovementKind::Converted)
                    .cloned()
                    .collect();
                self.bookings.insert(
                    exchanged.new_booking_id.clone(),
                    Booking {
                        service: exchanged.service.clone(),
                        credits: exchanged.credits,
                        starts_at: exchanged.starts_at,
                        active: true,
                        draws,
                        created_by: meta.event_id.clone(),
                    },
                );
            }
            Event::SabConverted(converted) => {
                *self
                    .sab_converted
                    .entry(converted.support_year)
                    .or_default() += converted.amount;
            }
            Event::HoursConsumed(_) => {}
            Event::ContractTerminated(terminated) => {
                self.status = Status::Terminated;
                self.terminated_on = Some(terminated.termination_date);
            }
            Event::BalancesForfeited(forfeited) => match forfeited.cause {
                schemas::ForfeitureCause::Expiry => {
                    self.status = Status::Expired;
                    self.ended_at = Some(forfeited.forfeited_at);
                }
                schemas::ForfeitureCause::Termination => {
                    self.ended_at = Some(forfeited.forfeited_at)
                }
                schemas::ForfeitureCause::ReversalAfterTerm => {}
            },
            Event::SabShortfallAssessed(assessed) => {
                self.shortfall_billable
                    .insert(assessed.support_year, assessed.shortfall);
            }
            Event::SabShortfallAdjusted(adjusted) => {
                let standing = self
                    .shortfall_billable
                    .entry(adjusted.support_year)
                    .or_default();
                for billable in &adjusted.billables {
                    *standing += billable.amount;
                }
            }
            Event::EventReversed(reversed) => {
                self.reversed.insert(reversed.reversed_event_id.clone());
                self.unapply_effects(&reversed.reversed_event_id);
            }
            Event::ExpiryNoticeIssued(notice) => {
                self.notices.insert(notice.notice.clone());
            }
        }
        for movement in event.movements() {
            self.apply_movement(movement, meta);
        }
        self.recorded.insert(
            meta.event_id.clone(),
            Recorded {
                event_type: event.type_name(),
                movements: event.movements().to_vec(),
                billables: event.billables().to_vec(),
                effective_at: meta.effective_at,
                event: event.clone(),
            },
        );
        self.assert_conservation();
    }

    /// Non-movement effects a reversal undoes (bookings, SAB totals, developer hours).
    fn unapply_effects(&mut self, reversed_event_id: &str) {
        let Some(original) = self.recorded.get(reversed_event_id).cloned() else {
            panic!("reversal of unknown event {reversed_event_id}");
        };
        match &original.event {
            Event::Purchased(purchased) => {
                match purchased.item {
                    schemas::Item::DeveloperAdvanced => {
                        self.developer_advanced_hours -= purchased.quantity
                    }
                    schemas::Item::DeveloperPerformance => {
                        self.developer_performance_hours -= purchased.quantity
                    }
                    _ => {}
                }
                let bucket = purchased.movements[0].bucket;
                if let Some(lot) = self
                    .lots
                    .get_mut(&bucket)
                    .and_then(|lots| lots.iter_mut().find(|lot| lot.id == purchased.lot))
                {
                    lot.reversed = true;
                }
            }
            Event::CreditsConverted(converted) => {
                self.bookings.remove(&converted.booking_id);
            }
            Event::SabConverted(converted) => {
                *self
                    .sab_converted
                    .entry(converted.support_year)
                    .or_default() -= converted.amount;
            }
            _ => {}
        }
    }

    fn apply_movement(&mut self, movement: &Movement, meta: &EventMeta) {
        self.totals
            .entry(movement.bucket)
            .or_default()
            .add(movement.kind, movement.quantity);
        let lot = self
            .lots
            .get_mut(&movement.bucket)
            .and_then(|lots| lots.iter_mut().find(|lot| lot.id == movement.lot))
            .unwrap_or_else(|| panic!("movement on unknown lot {}", movement.lot));
        let delta = movement.balance_delta();
        lot.remaining += delta;
        let when = (meta.effective_at, meta.version);
        let at = lot
            .history
            .partition_point(|(effective, version, _)| (*effective, *version) <= when);
        lot.history
            .insert(at, (meta.effective_at, meta.version, delta));
    }

    /// R12: every bucket's totals equal the sum of its lots, and no lot is negative.
    fn assert_conservation(&self) {
        for (bucket, totals) in &self.totals {
            let lots = self.lots.get(bucket).map_or(&[][..], Vec::as_slice);
            let in_lots: Decimal = lots.iter().map(|lot| lot.remaining).sum();
            assert_eq!(totals.net(), in_lots, "R12 broken for {bucket:?}");
            for lot in lots {
                assert!(
                    lot.remaining >= Decimal::ZERO,
                    "R12: lot {} went negative",
                    lot.id
                );
            }
        }
    }

    /// True for `advanced` and `performance` contracts.
    pub fn is_advanced_or_performance(&self) -> bool {
        self.terms
            .as_ref()
            .is_some_and(|t| matches!(t.package, Package::Advanced | Package::Performance))
    }
}

/// The rate card: each service's price in credits from each publication on.
#[derive(Debug, Clone, Default)]
pub struct RateCard {
    /// Publications in log order.
    publications: Vec<(DateTime<Utc>, BTreeMap<String, Decimal>)>,
    /// Events folded.
    pub version: u64,
}

impl RateCard {
    /// Folds a `rates_published` event.
    pub fn evolve(&mut self, event: &Event, version: u64) {
        if let Event::RatesPublished(published) = event {
            self.publications
                .push((published.effective_from, published.rates.clone()));
        }
        self.version = version;
    }

    /// The price of `service` in force at `at`, with the time it took effect: the latest
    /// publication (by effective time, then log order) at or before `at` that names it.
    pub fn rate_at(&self, service: &str, at: DateTime<Utc>) -> Option<(Decimal, DateTime<Utc>)> {
        self.publications
            .iter()
            .enumerate()
            .filter(|(_, (from, rates))| *from <= at && rates.contains_key(service))
            .max_by_key(|(index, (from, _))| (*from, *index))
            .map(|(_, (from, rates))| (rates[service], *from))
    }
}
