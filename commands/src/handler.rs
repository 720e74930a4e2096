//! The handler: the IO edge of the rules. It loads a contract's state from its stream (kept
//! warm per contract), asks `decide`, and appends the events with `Exact(version)` and the
//! command's idempotency key, retrying a bounded number of times on a version conflict. The
//! expected version is what keeps a warm state honest: the stream is read again only for a
//! cold state, after a conflict, and before a rejection is answered. The
//! scheduler's tick and the balance query live here too, since they read the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ledger::{Append, ExpectedVersion, Ledger, Metadata, NewEvent, RecordedEvent};
use rust_decimal::Decimal;
use schemas::{Bucket, Command, CommandEnvelope, EVENT_SCHEMA_VERSION, Event};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decide::{self, Decided};
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, EventMeta, RateCard};

pub use crate::limits::HANDLER_RETRIES_MAX;
use crate::limits::{LOAD_PAGE_MAX, WARM_CONTRACTS_MAX};
pub use schemas::{RATES_STREAM, contract_stream};

pub use schemas::result::{CommandResult, ResultEvent};

/// Which events a balance counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct BalanceFilter {
    /// Only events effective at or before this time.
    pub as_of: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time.
    pub known_at: Option<DateTime<Utc>>,
    /// Only events at or before this global position.
    pub at_position: Option<u64>,
}

/// A contract's balances as a filter sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceView {
    /// The contract.
    pub contract_id: String,
    /// The last position counted (0 when none).
    pub position: u64,
    /// Bucket → balance.
    #[serde(serialize_with = "schemas::decimal::DecimalMap::serialize")]
    pub balances: BTreeMap<String, Decimal>,
}

/// Loads, decides, appends. Cheap to clone; one per process that owns the store.
#[derive(Clone)]
pub struct Handler {
    ledger: Ledger,
    clock: ledger::Clock,
    default_actor: String,
    contracts: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<ContractState>>>>>,
    warm_contracts_max: usize,
    rates: Arc<tokio::sync::Mutex<RateCard>>,
}

fn reused_id(command_id: &str) -> Rejection {
    Rejection::new(
        Code::IdempotencyKeyReused,
        "R14",
        format!("command_id {command_id:?} was used before for a different command; use a new id"),
    )
}

/// Why a command was neither accepted nor rejected: an operational failure, not the command's
/// fault. Nothing of it was acknowledged; sending it again with the same `command_id` is safe
/// (R14). The NATS service answers it 500 `internal`, the CLI exits 2.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The log could not read or record it (a full disk, a writer that stopped or lost its
    /// lease).
    #[error("the command was not recorded: {0}")]
    Storage(#[from] ledger::Error),
    /// The stream kept changing under every attempt.
    #[error("{stream} kept changing under {HANDLER_RETRIES_MAX} attempts; retry the command")]
    Contended {
        /// The stream.
        stream: String,
    },
}

/// How `run` ends when it appends nothing.
enum NotAppended {
    /// The rules refused it.
    Rejected(Rejection),
    /// The log failed.
    Failed(HandlerError),
}

impl From<Rejection> for NotAppended {
    fn from(rejection: Rejection) -> Self {
        NotAppended::Rejected(rejection)
    }
}

impl From<ledger::Error> for NotAppended {
    fn from(error: ledger::Error) -> Self {
        match error {
            // R14: not a failure of the log but of the command.
            ledger::Error::IdempotencyKeyReused { command_id } => {
                NotAppended::Rejected(reused_id(&command_id))
            }
            other => NotAppended::Failed(HandlerError::Storage(other)),
        }
    }
}

fn content_hash(envelope: &CommandEnvelope) -> [u8; 32] {
    let mut canonical = envelope.clone();
    canonical.command_id = None;
    Sha256::digest(serde_json::to_vec(&canonical).expect("commands serialize")).into()
}

fn meta_of(recorded: &RecordedEvent) -> EventMeta {
    EventMeta {
        event_id: recorded.event_id.to_string(),
        version: recorded.version,
        effective_at: recorded.effective_at.unwrap_or(recorded.recorded_at),
    }
}

fn decode(recorded: &RecordedEvent) -> Event {
    // A stored event that does not parse is a broken invariant: it was validated before writing.
    Event::from_payload(&recorded.payload).unwrap_or_else(|e| {
        panic!(
            "event at position {} does not parse: {e}",
            recorded.position
        )
    })
}

impl Handler {
    /// A handler over an open log. `default_actor` stands in for a command without `actor`.
    pub fn new(ledger: Ledger, clock: ledger::Clock, default_actor: impl Into<String>) -> Handler {
        Handler {
            ledger,
            clock,
            default_actor: default_actor.into(),
            contracts: Arc::default(),
            warm_contracts_max: WARM_CONTRACTS_MAX,
            rates: Arc::default(),
        }
    }

    /// The same handler keeping at most `max` contracts warm (`WARM_CONTRACTS_MAX` by default).
    pub fn with_warm_contracts_max(mut self, max: usize) -> Handler {
        self.warm_contracts_max = max.max(1);
        self
    }

    /// The log.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The handler's clock now (what stamps its commands).
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn contract_cell(&self, contract_id: &str) -> Arc<tokio::sync::Mutex<ContractState>> {
        let mut contracts = self.contracts.lock().expect("contract cache lock");
        if let Some(cell) = contracts.get(contract_id) {
            return cell.clone();
        }
        if contracts.len() >= self.warm_contracts_max {
            // Drop the idle states (no command holds them): they are read again when needed.
            contracts.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        contracts.entry(contract_id.to_owned()).or_default().clone()
    }

    /// How many contracts' states are warm.
    pub fn warm_contracts(&self) -> usize {
        self.contracts.lock().expect("contract cache lock").len()
    }

    /// Folds whatever the stream has beyond the state's version.
    fn refresh(&self, stream: &str, state: &mut ContractState) -> Result<(), ledger::Error> {
        loop {
            let events = self
                .ledger
                .read_stream(stream, state.version + 1, LOAD_PAGE_MAX)?;
            if events.is_empty() {
                return Ok(());
            }
            for recorded in &events {
                state.evolve(&decode(recorded), &meta_of(recorded));
            }
        }
    }

    fn refresh_rates(&self, rates: &mut RateCard) -> Result<(), ledger::Error> {
        loop {
            let events = self
                .ledger
                .read_stream(RATES_STREAM, rates.version + 1, LOAD_PAGE_MAX)?;
            if events.is_empty() {
                return Ok(());
            }
            for recorded in &events {
                rates.evolve(&decode(recorded), recorded.version);
            }
        }
    }

    /// A contract's state as recorded so far.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn state(&self, contract_id: &str) -> Result<ContractState, ledger::Error> {
        let cell = self.contract_cell(contract_id);
        let mut state = cell.lock().await;
        self.refresh(&contract_stream(contract_id), &mut state)?;
        Ok(state.clone())
    }

    /// Runs one command: the INTERFACE.md result, accepted or rejected.
    ///
    /// # Errors
    /// When the log could not read or record it, or the contract kept changing under every
    /// attempt: not the command's fault, and safe to send again with the same `command_id`.
    pub async fn submit(
        &self,
        mut envelope: CommandEnvelope,
    ) -> Result<CommandResult, HandlerError> {
        // Hash the command as sent, before the actor is defaulted: a retry through another
        // process or user must match its first attempt.
        let hash = content_hash(&envelope);
        if envelope.actor.is_none() {
            envelope.actor = Some(self.default_actor.clone());
        }
        let command_id = envelope.command_id.clone();
        if let Some(id) = &command_id {
            match self.replay_answer(id, hash) {
                Ok(Some(result)) => return Ok(result),
                Ok(None) => {}
                Err(NotAppended::Rejected(rejection)) => {
                    return Ok(CommandResult::rejected(command_id, rejection));
                }
                Err(NotAppended::Failed(error)) => return Err(error),
            }
        }
        match self.run(&envelope, hash).await {
            Ok(events) => Ok(CommandResult {
                command_id,
                ok: true,
                events: Some(events),
                error: None,
            }),
            Err(not_appended) => {
                // A retry that raced its own first attempt (it passed the lookup above while
                // the first was still being written) must still get the first answer (R14).
                if let Some(id) = &command_id
                    && let Ok(Some(first)) = self.replay_answer(id, hash)
                {
                    return Ok(first);
                }
                match not_appended {
                    NotAppended::Rejected(rejection) => {
                        Ok(CommandResult::rejected(command_id, rejection))
                    }
                    NotAppended::Failed(error) => Err(error),
                }
            }
        }
    }

    /// R14: the first answer for a known command id with the same content, a rejection for
    /// other content, `None` for a new id.
    fn replay_answer(
        &self,
        command_id: &str,
        hash: [u8; 32],
    ) -> Result<Option<CommandResult>, NotAppended> {
        let Some((stored_hash, appended)) = self.ledger.command(command_id)? else {
            return Ok(None);
        };
        if stored_hash != hash {
            return Err(NotAppended::Rejected(reused_id(command_id)));
        }
        let events = self.result_events(&appended)?;
        Ok(Some(CommandResult {
            command_id: Some(command_id.to_owned()),
            ok: true,
            events: Some(events),
            error: None,
        }))
    }

    /// The events of a first append, read back from the log: for answers to a command id
    /// appended before (a fresh append answers with [`appended_events`]).
    fn result_events(
        &self,
        appended: &ledger::Appended,
    ) -> Result<Vec<ResultEvent>, ledger::Error> {
        let mut events = Vec::with_capacity(appended.events.len());
        for event in &appended.events {
            let recorded = self.ledger.read_all(event.position, 1)?;
            let event_type = recorded
                .first()
                .map(|r| r.event_type.clone())
                .unwrap_or_default();
            events.push(ResultEvent {
                event_id: event.event_id.to_string(),
                position: event.position,
                event_type,
            });
        }
        Ok(events)
    }

    async fn run(
        &self,
        envelope: &CommandEnvelope,
        hash: [u8; 32],
    ) -> Result<Vec<ResultEvent>, NotAppended> {
        if let Command::PublishRates(_) = envelope.body {
            return self.run_rates(envelope, hash).await;
        }
        let contract_id = envelope
            .body
            .contract_id()
            .expect("every other command names a contract");
        if !decide::valid_contract_id(contract_id) {
            return Err(Rejection::invalid(format!(
                "contract_id {contract_id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -"
            ))
            .into());
        }
        let stream = contract_stream(contract_id);
        let cell = self.contract_cell(contract_id);
        let mut state = cell.lock().await;
        let needs_rates = matches!(
            envelope.body,
            Command::ConvertCredits(_) | Command::ExchangeBooking(_)
        );
        // A warm state is current unless something else appended to the stream since it was
        // folded, and the append's expected version checks exactly that: so the log is read only
        // for a cold state (version 0), after a conflict, and before a rejection is answered (a
        // rejection appends nothing, so nothing else would check the state it was decided on).
        let mut read_first = state.version == 0;
        for _attempt in 0..HANDLER_RETRIES_MAX {
            if read_first {
                self.refresh(&stream, &mut state)?;
            }
            let rates = if needs_rates {
                let mut rates = self.rates.lock().await;
                self.refresh_rates(&mut rates)?;
                rates.clone()
            } else {
                RateCard::default()
            };
            let decided = match decide::decide(&state, &rates, envelope, (self.clock)()) {
                Ok(decided) => decided,
                Err(_) if !read_first => {
                    // Perhaps refused on a stale state: read, and decide once more on what the
                    // log holds (this attempt's rates are already fresh).
                    self.refresh(&stream, &mut state)?;
                    decide::decide(&state, &rates, envelope, (self.clock)())?
                }
                Err(rejection) => return Err(rejection.into()),
            };
            match self
                .append(
                    &stream,
                    state.version,
                    &decided,
                    &metadata_of(envelope),
                    hash,
                )
                .await
            {
                Ok(appended) if appended.duplicate => {
                    self.refresh(&stream, &mut state)?;
                    return Ok(self.result_events(&appended)?);
                }
                Ok(appended) => {
                    for (decision, event) in decided.iter().zip(&appended.events) {
                        let meta = EventMeta {
                            event_id: event.event_id.to_string(),
                            version: event.version,
                            effective_at: decision.effective_at,
                        };
                        state.evolve(&decision.event, &meta);
                    }
                    return Ok(appended_events(&decided, &appended));
                }
                Err(ledger::Error::VersionConflict { .. }) => read_first = true,
                Err(other) => return Err(other.into()),
            }
        }
        Err(NotAppended::Failed(HandlerError::Contended { stream }))
    }

    async fn run_rates(
        &self,
        envelope: &CommandEnvelope,
        hash: [u8; 32],
    ) -> Result<Vec<ResultEvent>, NotAppended> {
        let mut rates = self.rates.lock().await;
        for _attempt in 0..HANDLER_RETRIES_MAX {
            self.refresh_rates(&mut rates)?;
            let decided =
                decide::decide(&ContractState::default(), &rates, envelope, (self.clock)())?;
            match self
                .append(
                    RATES_STREAM,
                    rates.version,
                    &decided,
                    &metadata_of(envelope),
                    hash,
                )
                .await
            {
                Ok(appended) => {
                    self.refresh_rates(&mut rates)?;
                    return if appended.duplicate {
                        Ok(self.result_events(&appended)?)
                    } else {
                        Ok(appended_events(&decided, &appended))
                    };
                }
                Err(ledger::Error::VersionConflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(NotAppended::Failed(HandlerError::Contended {
            stream: RATES_STREAM.to_owned(),
        }))
    }

    async fn append(
        &self,
        stream: &str,
        version: u64,
        decided: &[Decided],
        metadata: &Metadata,
        hash: [u8; 32],
    ) -> Result<ledger::Appended, ledger::Error> {
        let events = decided
            .iter()
            .map(|d| NewEvent {
                event_type: d.event.type_name().to_owned(),
                schema_version: EVENT_SCHEMA_VERSION,
                effective_at: Some(d.effective_at),
                metadata: metadata.clone(),
                payload: d.event.to_payload(),
            })
            .collect();
        let mut append = Append::new(stream, ExpectedVersion::Exact(version), events);
        if let Some(id) = &metadata.command_id {
            append = append.idempotency(id.clone(), hash);
        }
        self.ledger.append(append).await
    }

    /// R10: appends every time-driven event due at `now`, each exactly once (derived command
    /// ids, and the state says what was done). Returns one result per event appended.
    ///
    /// # Errors
    /// When the log cannot be read or written.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<CommandResult>, ledger::Error> {
        let mut results = Vec::new();
        for stream in self.ledger.stream_ids(schemas::CONTRACT_STREAM_PREFIX)? {
            let contract_id = schemas::contract_of(&stream).unwrap_or_default().to_owned();
            let cell = self.contract_cell(&contract_id);
            let mut state = cell.lock().await;
            loop {
                self.refresh(&stream, &mut state)?;
                let Some(next) = crate::schedule::due(&state, now).into_iter().next() else {
                    break;
                };
                let command_id = next.command_id(&state);
                let decided = match crate::schedule::decide_time_driven(&state, &next) {
                    Ok(decided) => decided,
                    Err(_) => break,
                };
                let metadata = Metadata {
                    command_id: Some(command_id.clone()),
                    actor: Some("scheduler".into()),
                    correlation_id: Some(command_id.clone()),
                    ..Metadata::default()
                };
                let hash: [u8; 32] = Sha256::digest(
                    format!("{command_id}@{}", next.due_at().to_rfc3339()).as_bytes(),
                )
                .into();
                match self
                    .append(&stream, state.version, &decided, &metadata, hash)
                    .await
                {
                    Ok(appended) => {
                        results.push(CommandResult {
                            command_id: Some(command_id),
                            ok: true,
                            events: Some(self.result_events(&appended)?),
                            error: None,
                        });
                    }
                    Err(ledger::Error::VersionConflict { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(results)
    }

    /// A contract's balances by effective time, recorded time and/or position (R12 sums of the
    /// recorded movements), or `None` for an unknown contract.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn balance(
        &self,
        contract_id: &str,
        filter: BalanceFilter,
    ) -> Result<Option<BalanceView>, ledger::Error> {
        let stream = contract_stream(contract_id);
        let mut balances: BTreeMap<String, Decimal> = Bucket::ALL
            .iter()
            .map(|b| (b.name().to_owned(), Decimal::ZERO))
            .collect();
        let mut position = 0;
        let mut seen_any = false;
        let mut from = 1;
        loop {
            let events = self.ledger.read_stream(&stream, from, LOAD_PAGE_MAX)?;
            let Some(last) = events.last() else { break };
            from = last.version + 1;
            for recorded in &events {
                seen_any = true;
                let effective = recorded.effective_at.unwrap_or(recorded.recorded_at);
                if filter.at_position.is_some_and(|p| recorded.position > p)
                    || filter.known_at.is_some_and(|k| recorded.recorded_at > k)
                    || filter.as_of.is_some_and(|t| effective > t)
                {
                    continue;
                }
                position = recorded.position;
                let effects =
                    schemas::Effects::from_payload(&recorded.payload).unwrap_or_else(|e| {
                        panic!(
                            "event at position {} does not parse: {e}",
                            recorded.position
                        )
                    });
                for movement in &effects.movements {
                    *balances
                        .entry(movement.bucket.name().to_owned())
                        .or_default() += movement.balance_delta();
                }
            }
        }
        if !seen_any {
            return Ok(None);
        }
        Ok(Some(BalanceView {
            contract_id: contract_id.to_owned(),
            position,
            balances: balances
                .into_iter()
                .map(|(k, v)| (k, v.normalize()))
                .collect(),
        }))
    }
}

/// The answer's events for an append this handler just made: the types it decided, the ids
/// and positions the log gave them (no read back).
fn appended_events(decided: &[Decided], appended: &ledger::Appended) -> Vec<ResultEvent> {
    decided
        .iter()
        .zip(&appended.events)
        .map(|(decision, event)| ResultEvent {
            event_id: event.event_id.to_string(),
            position: event.position,
            event_type: decision.event.type_name().to_owned(),
        })
        .collect()
}

fn metadata_of(envelope: &CommandEnvelope) -> Metadata {
    Metadata {
        command_id: envelope.command_id.clone(),
        actor: envelope.actor.clone(),
        correlation_id: envelope.command_id.clone(),
        causation_id: None,
        reason: envelope.reason.clone(),
        reference: envelope.reference.clone(),
    }
}
