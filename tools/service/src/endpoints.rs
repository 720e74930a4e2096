//! The `ledger` service's endpoints: `ledger.cmd.<verb>` (a command's JSON, and `tick`) and
//! `ledger.qry.<view>` (`projections::query`). Every reply carries `Content-Type` and, when it
//! reflects the log, `Ledger-Position`; a refusal carries the service error headers.

use async_nats::HeaderMap;
use commands::handler::CommandResult;
use commands::{Handler, Rejection};
use ledger::Ledger;
use schemas::CommandEnvelope;
use tokio::sync::Mutex;

use crate::REQUEST_BYTES_MAX;

/// The queue group every endpoint of the `ledger` service shares: each request goes to one
/// instance.
pub const QUEUE_GROUP: &str = "ledger";

/// Endpoints merged into one stream of requests.
pub type Endpoints = futures::stream::SelectAll<async_nats::service::endpoint::Endpoint>;

/// Starts the `ledger` service (discovery: `$SRV.PING|INFO|STATS.ledger`).
///
/// # Errors
/// When NATS refuses it.
pub async fn start_service(
    client: &async_nats::Client,
    description: &str,
) -> anyhow::Result<async_nats::service::Service> {
    use async_nats::service::ServiceExt;
    client
        .service_builder()
        .description(description)
        .queue_group(QUEUE_GROUP)
        .start("ledger", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the NATS service: {e}"))
}

/// One endpoint per command verb (`ledger.cmd.<verb>`, named `cmd_<verb>`, `tick` included),
/// so discovery lists each and STATS counts each.
///
/// # Errors
/// When NATS refuses one.
pub async fn command_endpoints(
    service: &async_nats::service::Service,
) -> anyhow::Result<Endpoints> {
    let verbs = schemas::COMMAND_TYPES.iter().copied().chain(["tick"]);
    add_endpoints(service, "cmd", verbs).await
}

/// One endpoint per read view (`ledger.qry.<view>`, named `qry_<view>`).
///
/// # Errors
/// When NATS refuses one.
pub async fn query_endpoints(service: &async_nats::service::Service) -> anyhow::Result<Endpoints> {
    add_endpoints(service, "qry", projections::query::VIEWS.iter().copied()).await
}

async fn add_endpoints(
    service: &async_nats::service::Service,
    kind: &str,
    names: impl Iterator<Item = &str>,
) -> anyhow::Result<Endpoints> {
    let mut endpoints = Endpoints::new();
    for name in names {
        let subject = format!("ledger.{kind}.{name}");
        let endpoint = service
            .endpoint_builder()
            .name(format!("{kind}_{name}"))
            .add(subject.clone())
            .await
            .map_err(|e| anyhow::anyhow!("adding {subject}: {e}"))?;
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// Stops taking requests on every endpoint of the group.
pub async fn stop_endpoints(endpoints: &mut Endpoints) {
    for endpoint in endpoints.iter_mut() {
        endpoint.stop().await.ok();
    }
}

/// A reply body with the service-error headers when `error` is set.
async fn reply(
    client: &async_nats::Client,
    request: &async_nats::service::Request,
    body: &serde_json::Value,
    error: Option<(u16, &str)>,
    position: u64,
) {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    reply_bytes(client, request, bytes, error, position, &[]).await;
}

/// A reply of JSON bytes, with `Ledger-Position` (the head it was answered at, or the position
/// a command reached) and, when `error` is set, the service error headers.
///
/// An error is also told to the service API, so `$SRV.STATS` counts it (`num_errors`,
/// `last_error`): async-nats can only do that with an empty body, and clients need the body
/// (the result or refusal JSON), so the full reply goes first, published directly, and the
/// API's empty error reply second. A requester takes the first reply; the second finds no one
/// waiting. Each request is counted once.
async fn reply_bytes(
    client: &async_nats::Client,
    request: &async_nats::service::Request,
    bytes: Vec<u8>,
    error: Option<(u16, &str)>,
    position: u64,
    extra: &[(&str, String)],
) {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    headers.insert("Ledger-Position", position.to_string().as_str());
    for (name, value) in extra {
        headers.insert(*name, value.as_str());
    }
    if let Some((code, status)) = error {
        headers.insert("Nats-Service-Error-Code", code.to_string().as_str());
        headers.insert("Nats-Service-Error", status);
    }
    let Some((code, status)) = error else {
        if let Err(error) = request
            .respond_with_headers(Ok(bytes.into()), headers)
            .await
        {
            tracing::warn!(%error, "could not send a reply");
        }
        return;
    };
    let Some(reply_to) = request.message.reply.clone() else {
        return;
    };
    if let Err(error) = client
        .publish_with_headers(reply_to, headers, bytes.into())
        .await
    {
        tracing::warn!(%error, "could not send a reply");
    }
    let counted = async_nats::service::error::Error {
        code: usize::from(code),
        status: status.to_owned(),
    };
    request.respond(Err(counted)).await.ok();
}

/// The `command_id` of a request body, when one can be read from it.
fn command_id_in(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("command_id")?
        .as_str()
        .map(str::to_owned)
}

fn refusal(command_id: Option<String>, code: &str, message: String) -> serde_json::Value {
    serde_json::to_value(schemas::nats::ServiceRefusal {
        command_id,
        ok: false,
        error: schemas::nats::RefusalDetail {
            code: code.to_owned(),
            rule: None,
            message,
        },
    })
    .expect("refusals serialize")
}

/// Answers one `ledger.cmd.<verb>` request: the command decided and appended, or refused.
pub async fn answer_command(
    client: &async_nats::Client,
    handler: &Handler,
    request: async_nats::service::Request,
) {
    let subject = request.message.subject.to_string();
    let verb = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    let head = handler.ledger().committed_position();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            command_id_in(&payload),
            "payload_too_large",
            format!(
                "a command is at most {REQUEST_BYTES_MAX} bytes; this one is {}",
                payload.len()
            ),
        );
        return reply(
            client,
            &request,
            &body,
            Some((413, "payload_too_large")),
            head,
        )
        .await;
    }
    if verb == "tick" {
        return answer_tick(client, handler, &request, &payload).await;
    }
    if !schemas::COMMAND_TYPES.contains(&verb.as_str()) {
        let body = refusal(
            None,
            "unknown_verb",
            format!(
                "{subject}: no such command; the verbs are tick, {}",
                schemas::COMMAND_TYPES.join(", ")
            ),
        );
        return reply(client, &request, &body, Some((404, "unknown_verb")), head).await;
    }
    let result = match command_for_verb(&verb, &payload) {
        Ok(envelope) => {
            let command_id = envelope.command_id.clone();
            match handler.submit(envelope).await {
                Ok(result) => result,
                Err(error) => {
                    // Not the command's fault: the log could not record it (a full disk, a
                    // writer that stopped or lost its lease). A retry with the same command_id
                    // is safe.
                    let body = refusal(command_id, "internal", error.to_string());
                    return reply(client, &request, &body, Some((500, "internal")), head).await;
                }
            }
        }
        Err(message) => {
            CommandResult::rejected(command_id_in(&payload), Rejection::invalid(message))
        }
    };
    // The position the command reached (a retry: where its first attempt landed), else the head.
    let position = result
        .events
        .as_ref()
        .and_then(|events| events.iter().map(|e| e.position).max())
        .unwrap_or_else(|| handler.ledger().committed_position());
    let error = result.error.as_ref().map(|rejection| {
        if rejection.code == "invalid_command" {
            (400, "invalid_command")
        } else {
            (422, "rejected")
        }
    });
    let body = serde_json::to_value(&result).expect("results serialize");
    reply(client, &request, &body, error, position).await;
}

/// The command in a request body: its `type` may be left out (the verb says it) but must not
/// contradict the verb.
fn command_for_verb(verb: &str, payload: &[u8]) -> Result<CommandEnvelope, String> {
    // The usual case, one parse: the body names its type and it is the verb.
    if let Ok(text) = std::str::from_utf8(payload)
        && let Ok(envelope) = CommandEnvelope::from_json(text)
    {
        let kind = envelope.body.type_name();
        return if kind == verb {
            Ok(envelope)
        } else {
            Err(format!(
                "the body's type {kind:?} does not match the subject's verb {verb:?}"
            ))
        };
    }
    // Otherwise the type may be left out (the verb says it), or the body is bad: say why.
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value.as_object_mut().ok_or("a command is a JSON object")?;
    match object.get("type").and_then(|t| t.as_str()) {
        None => {
            object.insert("type".to_owned(), verb.into());
        }
        Some(kind) if kind == verb => {}
        Some(kind) => {
            return Err(format!(
                "the body's type {kind:?} does not match the subject's verb {verb:?}"
            ));
        }
    }
    CommandEnvelope::from_json(&value.to_string())
}

async fn answer_tick(
    client: &async_nats::Client,
    handler: &Handler,
    request: &async_nats::service::Request,
    payload: &[u8],
) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tick {
        now: String,
    }
    let now = serde_json::from_slice::<Tick>(payload)
        .map_err(|e| format!("tick takes {{\"now\":\"<RFC 3339>\"}}: {e}"))
        .and_then(|t| crate::parse_time("now", &t.now).map_err(|e| format!("{e:#}")));
    let head = handler.ledger().committed_position();
    let now = match now {
        Ok(now) => now,
        Err(message) => {
            let body = refusal(None, "invalid_command", message);
            return reply(client, request, &body, Some((400, "invalid_command")), head).await;
        }
    };
    // Time-driven events forfeit balances and bill shortfalls: no client may bring them
    // forward by sending a `now` ahead of the service's own clock.
    let clock = handler.now();
    if now > clock {
        let body = refusal(
            None,
            "clock_in_future",
            format!(
                "tick's now {} is later than the service's clock ({}); a tick may only catch up",
                now.to_rfc3339(),
                clock.to_rfc3339()
            ),
        );
        return reply(client, request, &body, Some((403, "clock_in_future")), head).await;
    }
    match handler.tick(now).await {
        Ok(results) => {
            let position = results
                .iter()
                .filter_map(|r| r.events.as_ref())
                .flatten()
                .map(|e| e.position)
                .max()
                .unwrap_or_else(|| handler.ledger().committed_position());
            let body = serde_json::to_value(&results).expect("results serialize");
            reply(client, request, &body, None, position).await;
        }
        Err(error) => {
            let body = refusal(None, "internal", format!("tick failed: {error}"));
            reply(client, request, &body, Some((500, "internal")), head).await;
        }
    }
}

/// What the query endpoints share: the lock that keeps two catch-ups of one projection from
/// racing, and the pages of answers too big for one message.
#[derive(Default)]
pub struct QueryState {
    /// One lock per persisted projection: a query waits only for another catching up the same
    /// one, never for an answer built from the log (an audit statement, a replay).
    catch_up: std::sync::Mutex<std::collections::HashMap<&'static str, std::sync::Arc<Mutex<()>>>>,
    pages: std::sync::Mutex<std::collections::VecDeque<Paged>>,
}

/// An answer too big for one message, kept for its pages to be fetched.
struct Paged {
    cursor: String,
    made: std::time::Instant,
    bytes: std::sync::Arc<Vec<u8>>,
    position: u64,
}

impl QueryState {
    /// The catch-up lock of projection `name`.
    fn catch_up_lock(&self, name: &'static str) -> std::sync::Arc<Mutex<()>> {
        self.catch_up
            .lock()
            .expect("catch-up locks")
            .entry(name)
            .or_default()
            .clone()
    }

    /// Keeps `bytes` for paging; returns its cursor.
    fn keep(&self, bytes: Vec<u8>, position: u64) -> String {
        let cursor = uuid::Uuid::now_v7().to_string();
        let mut pages = self.pages.lock().expect("pages lock");
        pages.retain(|paged| paged.made.elapsed() < crate::limits::PAGE_CURSOR_TTL);
        while pages.len() >= crate::limits::PAGE_CURSORS_MAX {
            pages.pop_front();
        }
        pages.push_back(Paged {
            cursor: cursor.clone(),
            made: std::time::Instant::now(),
            bytes: std::sync::Arc::new(bytes),
            position,
        });
        cursor
    }

    /// The bytes and position kept under `cursor`, while they live.
    fn find(&self, cursor: &str) -> Option<(std::sync::Arc<Vec<u8>>, u64)> {
        let pages = self.pages.lock().expect("pages lock");
        pages
            .iter()
            .find(|paged| {
                paged.cursor == cursor && paged.made.elapsed() < crate::limits::PAGE_CURSOR_TTL
            })
            .map(|paged| (paged.bytes.clone(), paged.position))
    }
}

/// The largest page of an answer: the server's max_payload less room for headers.
fn page_bytes(client: &async_nats::Client) -> usize {
    client
        .server_info()
        .max_payload
        .saturating_sub(crate::limits::HEADER_ROOM_BYTES)
        .max(1024)
}

/// Replies page `page` of `bytes` (kept under `cursor`) with `Ledger-Cursor`, `Ledger-Page`
/// and `Ledger-Pages`.
async fn reply_page(
    client: &async_nats::Client,
    request: &async_nats::service::Request,
    bytes: &[u8],
    position: u64,
    cursor: &str,
    page: usize,
) {
    let size = page_bytes(client);
    let pages = bytes.len().div_ceil(size);
    let start = (page * size).min(bytes.len());
    let end = (start + size).min(bytes.len());
    reply_bytes(
        client,
        request,
        bytes[start..end].to_vec(),
        None,
        position,
        &[
            ("Ledger-Cursor", cursor.to_owned()),
            ("Ledger-Page", page.to_string()),
            ("Ledger-Pages", pages.to_string()),
        ],
    )
    .await;
}

/// Answers one `ledger.qry.<view>` request (`projections::query`), after the log holds the
/// request's `min_position`. An answer bigger than one message is paged: the first reply
/// carries page 0 and `Ledger-Cursor`/`Ledger-Pages`; a request `{"cursor":…,"page":k}` gets
/// page k of the very same answer while the cursor lives (`PAGE_CURSOR_TTL`).
pub async fn answer_query(
    client: &async_nats::Client,
    ledger: &Ledger,
    state: &QueryState,
    request: async_nats::service::Request,
) {
    let subject = request.message.subject.to_string();
    let view = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    let head = ledger.committed_position();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            None,
            "payload_too_large",
            format!("a query is at most {REQUEST_BYTES_MAX} bytes"),
        );
        return reply(
            client,
            &request,
            &body,
            Some((413, "payload_too_large")),
            head,
        )
        .await;
    }
    // Read your writes: `min_position` (a command reply's `Ledger-Position`) makes the answer
    // wait until this instance holds it, up to 5 s; on a replicated instance the mirror may lag.
    let (payload, transport) = match split_transport(&payload) {
        Ok(split) => split,
        Err(message) => {
            let body = refusal(None, "invalid_query", message);
            return reply(client, &request, &body, Some((400, "invalid_query")), head).await;
        }
    };
    if let Some(cursor) = &transport.cursor {
        let page = transport.page.unwrap_or(0) as usize;
        return match state.find(cursor) {
            Some((bytes, position)) if page < bytes.len().div_ceil(page_bytes(client)) => {
                reply_page(client, &request, &bytes, position, cursor, page).await;
            }
            Some(_) => {
                let body = refusal(
                    None,
                    "invalid_query",
                    format!("no page {page} under this cursor"),
                );
                reply(client, &request, &body, Some((400, "invalid_query")), head).await;
            }
            None => {
                let body = refusal(
                    None,
                    "cursor_expired",
                    format!(
                        "no answer is kept under cursor {cursor} (kept {} s): ask again",
                        crate::limits::PAGE_CURSOR_TTL.as_secs()
                    ),
                );
                reply(client, &request, &body, Some((410, "cursor_expired")), head).await;
            }
        };
    }
    let min_position = transport.min_position;
    if let Some(position) = min_position
        && tokio::time::timeout(crate::READ_YOUR_WRITES_WAIT, ledger.wait_for(position))
            .await
            .is_err()
    {
        let body = refusal(
            None,
            "not_yet_replicated",
            format!(
                "this instance has the log up to position {} and did not reach {position} within 5 s",
                ledger.committed_position()
            ),
        );
        return reply(
            client,
            &request,
            &body,
            Some((503, "not_yet_replicated")),
            head,
        )
        .await;
    }
    let ledger = ledger.clone();
    let answer = match projections::query::Query::from_json(&view, &payload) {
        Err(error) => Err(error),
        Ok(query) => {
            // A view that catches a projection up first waits for another catching up the
            // same one; the others do not wait at all.
            let lock = query.projection().map(|name| state.catch_up_lock(name));
            let _one_at_a_time = match &lock {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            tokio::task::spawn_blocking(move || projections::query::answer(&ledger, &query))
                .await
                .unwrap_or_else(|e| {
                    Err(projections::query::QueryError::Log(
                        ledger::Error::Invalid {
                            what: "query",
                            detail: format!("the query panicked: {e}"),
                        },
                    ))
                })
        }
    };
    match answer {
        Ok((answer, position)) => {
            let bytes = answer.to_json();
            if bytes.len() <= page_bytes(client) {
                reply_bytes(client, &request, bytes, None, position, &[]).await;
            } else if bytes.len() > crate::limits::ANSWER_BYTES_MAX {
                let body = refusal(
                    None,
                    "answer_too_large",
                    format!(
                        "the answer is {} bytes, more than the {} a query may page; narrow it \
                         (a period with --from/--to, a position with --until)",
                        bytes.len(),
                        crate::limits::ANSWER_BYTES_MAX
                    ),
                );
                reply(
                    client,
                    &request,
                    &body,
                    Some((413, "answer_too_large")),
                    head,
                )
                .await;
            } else {
                let cursor = state.keep(bytes, position);
                let (bytes, _) = state.find(&cursor).expect("just kept");
                reply_page(client, &request, &bytes, position, &cursor, 0).await;
            }
        }
        Err(error) => {
            let (code, status) = error.status();
            let body = refusal(None, status, error.to_string());
            reply(client, &request, &body, Some((code, status)), head).await;
        }
    }
}

/// What a query request carries besides its view's parameters.
#[derive(Default)]
struct Transport {
    /// Wait until the log holds this position.
    min_position: Option<u64>,
    /// A paged answer's cursor.
    cursor: Option<String>,
    /// The page wanted under `cursor`.
    page: Option<u64>,
}

/// A query's body without its transport fields, and those.
fn split_transport(payload: &[u8]) -> Result<(Vec<u8>, Transport), String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), Transport::default()));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad query: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("a query is a JSON object".to_owned());
    };
    let number = |value: serde_json::Value, name: &str| {
        value.as_u64().ok_or_else(|| format!("{name} is a number"))
    };
    let transport = Transport {
        min_position: object
            .remove("min_position")
            .map(|v| number(v, "min_position"))
            .transpose()?,
        cursor: object
            .remove("cursor")
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "cursor is a string".to_owned())
            })
            .transpose()?,
        page: object
            .remove("page")
            .map(|v| number(v, "page"))
            .transpose()?,
    };
    Ok((value.to_string().into_bytes(), transport))
}
