//! Every read view as one typed question and its answer: the same code answers `ledgerctl`'s
//! embedded verbs and the NATS service's `ledger.qry.<view>` endpoints, so a view reads the same
//! whichever way it was asked. A question arrives as its view's name and a flat JSON object of
//! parameters (what the CLI's flags name); times given as text are read in the contract's zone
//! (a date alone is 00:00 there).
//!
//! Not here: rendering (`tools` prints each answer as a table, JSON, CSV or HTML), paging and
//! transport (`tools/service`), any rule.

use chrono::{DateTime, Utc};
use ledger::{Checkpoint, Ledger};

use crate::audit::{Period, Statement, StatementError};
use crate::balances::{Balances as BalancesProjection, ContractBalances};
use crate::disputes::{Diff, ReplayStep, Until};
use crate::notices::Notices;
use crate::runner::Projection;
use crate::shortfalls::{BillableEntry, Shortfalls};

pub use schemas::nats::{QueryParams, VIEWS};

/// One read question, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A contract's balances, by effective time, recorded time and/or position.
    Balance {
        /// The contract.
        contract_id: String,
        /// The filters, as given.
        filter: TextFilter,
    },
    /// Quantities and money by kind and lot, and billables; filtered as `Balance`.
    BalanceDetail {
        /// The contract.
        contract_id: String,
        /// The filters, as given.
        filter: TextFilter,
    },
    /// The audit statement.
    Audit {
        /// The contract.
        contract_id: String,
        /// Effective at or after.
        from: Option<String>,
        /// Effective before.
        to: Option<String>,
        /// As issued then.
        known_at: Option<String>,
    },
    /// Billables, of one contract or all.
    Shortfalls {
        /// Only this contract.
        contract_id: Option<String>,
    },
    /// Expiry notices, of one contract or all.
    Notices {
        /// Only this contract.
        contract_id: Option<String>,
    },
    /// A contract's history event by event with the state after each.
    Replay {
        /// The contract.
        contract_id: String,
        /// Up to a position or a recorded time.
        until: Option<String>,
    },
    /// What changed between two knowledge times.
    Diff {
        /// The contract.
        contract_id: String,
        /// The earlier knowledge time.
        earlier: String,
        /// The later knowledge time.
        later: String,
    },
    /// The whole log's hash chain and indexes.
    Verify,
    /// Raw events of the log or of one stream.
    Log {
        /// One stream, or the whole log.
        stream: Option<String>,
        /// The first position (or version).
        start: u64,
        /// At most this many.
        limit: usize,
    },
}

/// `balance`'s filters as text (times read in the contract's zone when answered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextFilter {
    /// Effective at or before.
    pub as_of: Option<String>,
    /// Recorded at or before.
    pub known_at: Option<String>,
    /// At or before this position.
    pub at_position: Option<u64>,
}

impl TextFilter {
    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        self.as_of.is_some() || self.known_at.is_some() || self.at_position.is_some()
    }
}

pub use crate::limits::LOG_READ_EVENTS_DEFAULT;

impl Query {
    /// The question `view` asks with `params`; an error names what is missing or not taken.
    ///
    /// # Errors
    /// An unknown view, a missing contract, or a parameter the view does not take.
    pub fn new(view: &str, params: QueryParams) -> Result<Query, QueryError> {
        let QueryParams {
            contract_id,
            as_of,
            known_at,
            known_at_later,
            at_position,
            from,
            to,
            until,
            stream,
            start,
            limit,
        } = params;
        let taken: &[&str] = match view {
            "balance" | "balance_detail" => &["contract_id", "as_of", "known_at", "at_position"],
            "audit" => &["contract_id", "from", "to", "known_at"],
            "shortfalls" | "notices" => &["contract_id"],
            "replay" => &["contract_id", "until"],
            "diff" => &["contract_id", "known_at", "known_at_later"],
            "verify" => &[],
            "log" => &["stream", "start", "limit"],
            other => {
                return Err(QueryError::UnknownView(format!(
                    "no view {other:?}; the views are {}",
                    VIEWS.join(", ")
                )));
            }
        };
        let given = [
            ("contract_id", contract_id.is_some()),
            ("as_of", as_of.is_some()),
            ("known_at", known_at.is_some()),
            ("known_at_later", known_at_later.is_some()),
            ("at_position", at_position.is_some()),
            ("from", from.is_some()),
            ("to", to.is_some()),
            ("until", until.is_some()),
            ("stream", stream.is_some()),
            ("start", start.is_some()),
            ("limit", limit.is_some()),
        ];
        if let Some((name, _)) = given
            .iter()
            .find(|(name, set)| *set && !taken.contains(name))
        {
            return Err(QueryError::Invalid(format!(
                "{view} does not take {name}; it takes {}",
                if taken.is_empty() {
                    "nothing".to_owned()
                } else {
                    taken.join(", ")
                }
            )));
        }
        let needs_contract = |contract_id: Option<String>| {
            contract_id.ok_or_else(|| QueryError::Invalid(format!("{view} needs a contract_id")))
        };
        let filter = TextFilter {
            as_of,
            known_at: known_at.clone(),
            at_position,
        };
        Ok(match view {
            "balance" => Query::Balance {
                contract_id: needs_contract(contract_id)?,
                filter,
            },
            "balance_detail" => Query::BalanceDetail {
                contract_id: needs_contract(contract_id)?,
                filter,
            },
            "audit" => Query::Audit {
                contract_id: needs_contract(contract_id)?,
                from,
                to,
                known_at,
            },
            "shortfalls" => Query::Shortfalls { contract_id },
            "notices" => Query::Notices { contract_id },
            "replay" => Query::Replay {
                contract_id: needs_contract(contract_id)?,
                until,
            },
            "diff" => {
                let contract_id = needs_contract(contract_id)?;
                let (Some(earlier), Some(later)) = (known_at, known_at_later) else {
                    return Err(QueryError::Invalid(
                        "diff takes two knowledge times: known_at (the earlier) and \
                         known_at_later"
                            .to_owned(),
                    ));
                };
                Query::Diff {
                    contract_id,
                    earlier,
                    later,
                }
            }
            "verify" => Query::Verify,
            _ => Query::Log {
                stream,
                start: start.unwrap_or(1),
                limit: limit.unwrap_or(LOG_READ_EVENTS_DEFAULT),
            },
        })
    }

    /// The question from a request's body (empty: no parameters).
    ///
    /// # Errors
    /// A body that is not the parameters' JSON, or what [`Query::new`] refuses.
    pub fn from_json(view: &str, body: &[u8]) -> Result<Query, QueryError> {
        let params = if body.iter().all(u8::is_ascii_whitespace) {
            QueryParams::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| QueryError::Invalid(format!("bad query: {e}")))?
        };
        Query::new(view, params)
    }

    /// The view's name.
    pub fn view(&self) -> &'static str {
        match self {
            Query::Balance { .. } => "balance",
            Query::BalanceDetail { .. } => "balance_detail",
            Query::Audit { .. } => "audit",
            Query::Shortfalls { .. } => "shortfalls",
            Query::Notices { .. } => "notices",
            Query::Replay { .. } => "replay",
            Query::Diff { .. } => "diff",
            Query::Verify => "verify",
            Query::Log { .. } => "log",
        }
    }

    /// The persisted projection this question catches up before answering, if any: two
    /// catch-ups of one projection must not race, answers from the log alone never wait.
    pub fn projection(&self) -> Option<&'static str> {
        match self {
            Query::Balance { .. } => Some(crate::timeline::NAME),
            Query::BalanceDetail { filter, .. } if !filter.is_set() => {
                Some(crate::balances::Balances::NAME)
            }
            Query::Shortfalls { .. } => Some(crate::shortfalls::Shortfalls::NAME),
            Query::Notices { .. } => Some(crate::notices::Notices::NAME),
            _ => None,
        }
    }

    /// The parameters to send for this question.
    pub fn params(&self) -> QueryParams {
        let mut params = QueryParams::default();
        match self.clone() {
            Query::Balance {
                contract_id,
                filter,
            }
            | Query::BalanceDetail {
                contract_id,
                filter,
            } => {
                params.contract_id = Some(contract_id);
                params.as_of = filter.as_of;
                params.known_at = filter.known_at;
                params.at_position = filter.at_position;
            }
            Query::Audit {
                contract_id,
                from,
                to,
                known_at,
            } => {
                params.contract_id = Some(contract_id);
                params.from = from;
                params.to = to;
                params.known_at = known_at;
            }
            Query::Shortfalls { contract_id } | Query::Notices { contract_id } => {
                params.contract_id = contract_id;
            }
            Query::Replay { contract_id, until } => {
                params.contract_id = Some(contract_id);
                params.until = until;
            }
            Query::Diff {
                contract_id,
                earlier,
                later,
            } => {
                params.contract_id = Some(contract_id);
                params.known_at = Some(earlier);
                params.known_at_later = Some(later);
            }
            Query::Verify => {}
            Query::Log {
                stream,
                start,
                limit,
            } => {
                params.stream = stream;
                params.start = Some(start);
                params.limit = Some(limit);
            }
        }
        params
    }
}

/// Why a question was not answered.
#[derive(Debug)]
pub enum QueryError {
    /// No such view.
    UnknownView(String),
    /// Bad or missing parameters.
    Invalid(String),
    /// No such contract.
    UnknownContract(String),
    /// The log failed.
    Log(ledger::Error),
}

impl QueryError {
    /// The service error code and status word it is answered with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            QueryError::UnknownView(_) => (404, "unknown_view"),
            QueryError::Invalid(_) => (400, "invalid_query"),
            QueryError::UnknownContract(_) => (404, "unknown_contract"),
            QueryError::Log(_) => (500, "internal"),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::UnknownView(message) | QueryError::Invalid(message) => {
                write!(f, "{message}")
            }
            QueryError::UnknownContract(contract) => write!(f, "no contract {contract}"),
            QueryError::Log(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<ledger::Error> for QueryError {
    fn from(error: ledger::Error) -> Self {
        QueryError::Log(error)
    }
}

impl From<serde_json::Error> for QueryError {
    fn from(error: serde_json::Error) -> Self {
        QueryError::Log(ledger::Error::Corrupt {
            position: 0,
            detail: format!("a projection entry does not decode: {error}"),
        })
    }
}

pub use schemas::reply::{BalanceDetail, LogEntry, NoticesAnswer, VerifyAnswer};

/// `verify`'s answer for a verification's report.
pub fn verify_answer(report: &ledger::VerifyReport) -> VerifyAnswer {
    VerifyAnswer {
        ok: report.is_ok(),
        events_checked: report.events_checked,
        streams_checked: report.streams_checked,
        last_position: report.last_position,
        last_hash: ledger::hex(&report.last_hash),
        first_bad_position: report.problem.as_ref().map(|p| p.position),
        problem: report.problem.as_ref().map(|p| p.detail.clone()),
    }
}

/// An answer, one variant per view.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `balance`.
    Balance(crate::timeline::Balances),
    /// `balance_detail`.
    BalanceDetail(BalanceDetail),
    /// `audit`.
    Audit(Box<Statement>),
    /// `shortfalls`.
    Shortfalls(Vec<BillableEntry>),
    /// `notices`.
    Notices(NoticesAnswer),
    /// `replay`.
    Replay(Vec<ReplayStep>),
    /// `diff`.
    Diff(Diff),
    /// `verify`.
    Verify(VerifyAnswer),
    /// `log`.
    Log(Vec<LogEntry>),
}

impl Answer {
    /// The answer's JSON, as the service replies it.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Answer::Balance(view) => serde_json::to_vec(view),
            Answer::BalanceDetail(detail) => serde_json::to_vec(detail),
            Answer::Audit(statement) => serde_json::to_vec(statement),
            Answer::Shortfalls(entries) => serde_json::to_vec(entries),
            Answer::Notices(notices) => serde_json::to_vec(notices),
            Answer::Replay(steps) => serde_json::to_vec(steps),
            Answer::Diff(diff) => serde_json::to_vec(diff),
            Answer::Verify(report) => serde_json::to_vec(report),
            Answer::Log(entries) => serde_json::to_vec(entries),
        }
        .expect("answers serialize")
    }

    /// An answer from the service's reply to `view`.
    ///
    /// # Errors
    /// A reply that is not that view's JSON.
    pub fn from_json(view: &str, body: &[u8]) -> Result<Answer, serde_json::Error> {
        Ok(match view {
            "balance" => Answer::Balance(serde_json::from_slice(body)?),
            "balance_detail" => Answer::BalanceDetail(serde_json::from_slice(body)?),
            "audit" => Answer::Audit(serde_json::from_slice(body)?),
            "shortfalls" => Answer::Shortfalls(serde_json::from_slice(body)?),
            "notices" => Answer::Notices(serde_json::from_slice(body)?),
            "replay" => Answer::Replay(serde_json::from_slice(body)?),
            "diff" => Answer::Diff(serde_json::from_slice(body)?),
            "verify" => Answer::Verify(serde_json::from_slice(body)?),
            _ => Answer::Log(serde_json::from_slice(body)?),
        })
    }
}

/// A time parameter of a contract's view: RFC 3339, or a date alone (00:00 in the contract's
/// zone; UTC for an unknown contract, which the view then reports).
///
/// # Errors
/// Text that is neither, naming `flag`.
pub fn contract_time(
    ledger: &Ledger,
    contract: &str,
    flag: &str,
    text: &str,
) -> Result<DateTime<Utc>, QueryError> {
    let zone = crate::time::zone_of(ledger, contract)?.unwrap_or(chrono_tz::Tz::UTC);
    crate::time::parse(flag, text, zone).map_err(QueryError::Invalid)
}

fn contract_exists(ledger: &Ledger, contract: &str) -> Result<(), QueryError> {
    if ledger.stream_version(&schemas::contract_stream(contract))? == 0 {
        return Err(QueryError::UnknownContract(contract.to_owned()));
    }
    Ok(())
}

/// A projection's states (one contract's, or all), caught up to the head first.
fn states_in<P: Projection>(
    ledger: &Ledger,
    contract: Option<&str>,
) -> Result<(Checkpoint, Vec<P::State>), QueryError> {
    if let Some(contract) = contract {
        contract_exists(ledger, contract)?;
    }
    let store = ledger.projection_store(P::NAME)?;
    let checkpoint = crate::catch_up::<P>(ledger, &store, &mut |_| {})?;
    let mut states = Vec::new();
    for (key, value) in store.entries(contract.unwrap_or("").as_bytes())? {
        if contract.is_some_and(|c| key != c.as_bytes()) {
            continue;
        }
        states.push(serde_json::from_slice(&value)?);
    }
    Ok((checkpoint, states))
}

/// Answers `query` from `ledger`, with the log position the answer reflects.
///
/// # Errors
/// Bad parameters, an unknown contract, or a failing log.
pub fn answer(ledger: &Ledger, query: &Query) -> Result<(Answer, u64), QueryError> {
    let head = ledger.committed_position();
    let time = |contract: &str, flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| contract_time(ledger, contract, flag, t))
            .transpose()
    };
    Ok(match query {
        Query::Balance {
            contract_id,
            filter,
        } => {
            let filter = crate::timeline::Filter {
                as_of: time(contract_id, "as_of (--as-of)", &filter.as_of)?,
                known_at: time(contract_id, "known_at (--known-at)", &filter.known_at)?,
                at_position: filter.at_position,
            };
            let store = ledger.projection_store(crate::timeline::NAME)?;
            let checkpoint = crate::timeline::catch_up(ledger, &store)?;
            let view = crate::timeline::balance(&store, contract_id, filter)?
                .ok_or_else(|| QueryError::UnknownContract(contract_id.clone()))?;
            (Answer::Balance(view), checkpoint.position)
        }
        Query::BalanceDetail {
            contract_id,
            filter,
        } => {
            let detail = balance_detail(ledger, contract_id, filter)?;
            let position = detail.built_to_position;
            (Answer::BalanceDetail(detail), position)
        }
        Query::Audit {
            contract_id,
            from,
            to,
            known_at,
        } => {
            let period = Period {
                from: time(contract_id, "from (--from)", from)?,
                to: time(contract_id, "to (--to)", to)?,
                known_at: time(contract_id, "known_at (--known-at)", known_at)?,
            };
            let statement =
                crate::audit::statement(ledger, contract_id, period).map_err(|e| match e {
                    StatementError::UnknownContract(c) => QueryError::UnknownContract(c),
                    StatementError::BadPeriod => QueryError::Invalid(e.to_string()),
                    StatementError::Log(error) => QueryError::Log(error),
                })?;
            let position = statement.built_to_position;
            (Answer::Audit(Box::new(statement)), position)
        }
        Query::Shortfalls { contract_id } => {
            let (checkpoint, states) = states_in::<Shortfalls>(ledger, contract_id.as_deref())?;
            let entries = states.into_iter().flat_map(|state| state.entries).collect();
            (Answer::Shortfalls(entries), checkpoint.position)
        }
        Query::Notices { contract_id } => {
            let (checkpoint, states) = states_in::<Notices>(ledger, contract_id.as_deref())?;
            let notices = states.into_iter().flat_map(|state| state.notices).collect();
            (
                Answer::Notices(NoticesAnswer {
                    built_to_position: checkpoint.position,
                    built_to_hash: ledger::hex(&checkpoint.hash),
                    notices,
                }),
                checkpoint.position,
            )
        }
        Query::Replay { contract_id, until } => {
            let until = match until.as_deref() {
                None => Until::End,
                Some(text) => match text.parse::<u64>() {
                    Ok(position) => Until::Position(position),
                    Err(_) => Until::RecordedAt(
                        contract_time(ledger, contract_id, "until (--until)", text).map_err(
                            |e| {
                                QueryError::Invalid(format!(
                                    "{e}; until takes a log position, an RFC 3339 time or a date"
                                ))
                            },
                        )?,
                    ),
                },
            };
            let steps = crate::disputes::replay(ledger, contract_id, until)?
                .ok_or_else(|| QueryError::UnknownContract(contract_id.clone()))?;
            (Answer::Replay(steps), head)
        }
        Query::Diff {
            contract_id,
            earlier,
            later,
        } => {
            let earlier = contract_time(ledger, contract_id, "known_at (--known-at)", earlier)?;
            let later = contract_time(ledger, contract_id, "known_at_later (--known-at)", later)?;
            let diff = crate::disputes::diff(ledger, contract_id, earlier, later)?
                .ok_or_else(|| QueryError::UnknownContract(contract_id.clone()))?;
            (Answer::Diff(diff), head)
        }
        Query::Verify => {
            let report = ledger.verify()?;
            (Answer::Verify(verify_answer(&report)), report.last_position)
        }
        Query::Log {
            stream,
            start,
            limit,
        } => {
            let events = match stream {
                Some(stream) => ledger.read_stream(stream, *start, *limit)?,
                None => ledger.read_all(*start, *limit)?,
            };
            let entries = events
                .into_iter()
                .map(|event| LogEntry {
                    payload: serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
                        serde_json::Value::String(
                            String::from_utf8_lossy(&event.payload).into_owned(),
                        )
                    }),
                    position: event.position,
                    stream: event.stream,
                    version: event.version,
                    event_id: event.event_id.to_string(),
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    recorded_at: event.recorded_at.to_rfc3339(),
                    effective_at: event.effective_at.map(|t| t.to_rfc3339()),
                    command_id: event.metadata.command_id,
                    hash: ledger::hex(&event.hash),
                })
                .collect();
            (Answer::Log(entries), head)
        }
    })
}

/// Quantities and money by kind and lot, and billables. Without filters, the balances
/// projection's current state; with them, the same fold over only the contract's events that
/// pass them, stamped with the last position counted and its chain hash.
fn balance_detail(
    ledger: &Ledger,
    contract: &str,
    filter: &TextFilter,
) -> Result<BalanceDetail, QueryError> {
    let time = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| contract_time(ledger, contract, flag, t))
            .transpose()
    };
    let (balances, checkpoint) = if filter.is_set() {
        let as_of = time("as_of (--as-of)", &filter.as_of)?;
        let known_at = time("known_at (--known-at)", &filter.known_at)?;
        let events = crate::contract_events(ledger, contract)?;
        if events.is_empty() {
            return Err(QueryError::UnknownContract(contract.to_owned()));
        }
        let mut state = ContractBalances::default();
        let mut checkpoint = Checkpoint {
            position: 0,
            hash: [0; 32],
        };
        for event in &events {
            if filter.at_position.is_some_and(|p| event.position > p)
                || known_at.is_some_and(|k| event.recorded_at > k)
                || as_of.is_some_and(|t| event.effective_at.unwrap_or(event.recorded_at) > t)
            {
                continue;
            }
            BalancesProjection::apply(&mut state, event);
            checkpoint = Checkpoint {
                position: event.position,
                hash: event.hash,
            };
        }
        (state, checkpoint)
    } else {
        let store = ledger.projection_store(BalancesProjection::NAME)?;
        let checkpoint = crate::catch_up::<BalancesProjection>(ledger, &store, &mut |_| {})?;
        let Some(entry) = store.get(contract.as_bytes())? else {
            return Err(QueryError::UnknownContract(contract.to_owned()));
        };
        (serde_json::from_slice(&entry)?, checkpoint)
    };
    Ok(BalanceDetail {
        balances,
        built_to_position: checkpoint.position,
        built_to_hash: ledger::hex(&checkpoint.hash),
    })
}
