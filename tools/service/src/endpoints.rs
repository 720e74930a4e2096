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

/// A reply body with the service-error headers when `code` is set.
async fn reply(
    request: &async_nats::service::Request,
    body: &serde_json::Value,
    error: Option<(u16, &str)>,
    position: Option<u64>,
) {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    reply_bytes(request, bytes, error, position).await;
}

/// A reply of JSON bytes with the service-error headers when `code` is set.
async fn reply_bytes(
    request: &async_nats::service::Request,
    bytes: Vec<u8>,
    error: Option<(u16, &str)>,
    position: Option<u64>,
) {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    if let Some(position) = position {
        headers.insert("Ledger-Position", position.to_string().as_str());
    }
    if let Some((code, status)) = error {
        headers.insert("Nats-Service-Error-Code", code.to_string().as_str());
        headers.insert("Nats-Service-Error", status);
    }
    if let Err(error) = request
        .respond_with_headers(Ok(bytes.into()), headers)
        .await
    {
        tracing::warn!(%error, "could not send a reply");
    }
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
pub async fn answer_command(handler: &Handler, request: async_nats::service::Request) {
    let subject = request.message.subject.to_string();
    let verb = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            None,
            "payload_too_large",
            format!(
                "a command is at most {REQUEST_BYTES_MAX} bytes; this one is {}",
                payload.len()
            ),
        );
        return reply(&request, &body, Some((413, "payload_too_large")), None).await;
    }
    if verb == "tick" {
        return answer_tick(handler, &request, &payload).await;
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
        return reply(&request, &body, Some((404, "unknown_verb")), None).await;
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
                    return reply(&request, &body, Some((500, "internal")), None).await;
                }
            }
        }
        Err(message) => {
            let command_id = serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v.get("command_id")?.as_str().map(str::to_owned));
            CommandResult::rejected(command_id, Rejection::invalid(message))
        }
    };
    let position = result
        .events
        .as_ref()
        .and_then(|events| events.iter().map(|e| e.position).max());
    let error = result.error.as_ref().map(|rejection| {
        if rejection.code == "invalid_command" {
            (400, "invalid_command")
        } else {
            (422, "rejected")
        }
    });
    let body = serde_json::to_value(&result).expect("results serialize");
    reply(&request, &body, error, position).await;
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

async fn answer_tick(handler: &Handler, request: &async_nats::service::Request, payload: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tick {
        now: String,
    }
    let now = serde_json::from_slice::<Tick>(payload)
        .map_err(|e| format!("tick takes {{\"now\":\"<RFC 3339>\"}}: {e}"))
        .and_then(|t| crate::parse_time("now", &t.now).map_err(|e| format!("{e:#}")));
    let now = match now {
        Ok(now) => now,
        Err(message) => {
            let body = refusal(None, "invalid_command", message);
            return reply(request, &body, Some((400, "invalid_command")), None).await;
        }
    };
    match handler.tick(now).await {
        Ok(results) => {
            let position = results
                .iter()
                .filter_map(|r| r.events.as_ref())
                .flatten()
                .map(|e| e.position)
                .max();
            let body = serde_json::to_value(&results).expect("results serialize");
            reply(request, &body, None, position).await;
        }
        Err(error) => {
            let body = refusal(None, "internal", format!("tick failed: {error}"));
            reply(request, &body, Some((500, "internal")), None).await;
        }
    }
}

/// Answers one `ledger.qry.<view>` request (`projections::query`), after the log holds the
/// request's `min_position`.
pub async fn answer_query(
    ledger: &Ledger,
    views: &Mutex<()>,
    request: async_nats::service::Request,
) {
    let subject = request.message.subject.to_string();
    let view = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            None,
            "payload_too_large",
            "a query is at most 64 KiB".into(),
        );
        return reply(&request, &body, Some((413, "payload_too_large")), None).await;
    }
    // Read your writes: `min_position` (a command reply's `Ledger-Position`) makes the answer
    // wait until this instance holds it, up to 5 s; on a replicated instance the mirror may lag.
    let (payload, min_position) = match split_min_position(&payload) {
        Ok(split) => split,
        Err(message) => {
            let body = refusal(None, "invalid_query", message);
            return reply(&request, &body, Some((400, "invalid_query")), None).await;
        }
    };
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
        return reply(&request, &body, Some((503, "not_yet_replicated")), None).await;
    }
    // Views catch their projections up first; one at a time keeps two catch-ups of the same
    // projection from racing.
    let _one_at_a_time = views.lock().await;
    let ledger = ledger.clone();
    let answer = match projections::query::Query::from_json(&view, &payload) {
        Err(error) => Err(error),
        Ok(query) => {
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
            reply_bytes(&request, answer.to_json(), None, Some(position)).await;
        }
        Err(error) => {
            let (code, status) = error.status();
            let body = refusal(None, status, error.to_string());
            reply(&request, &body, Some((code, status)), None).await;
        }
    }
}

/// A query's body without its `min_position`, and that position.
fn split_min_position(payload: &[u8]) -> Result<(Vec<u8>, Option<u64>), String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), None));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad query: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("a query is a JSON object".to_owned());
    };
    let min_position = match object.remove("min_position") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or("min_position is a log position (a number)")?,
        ),
    };
    Ok((value.to_string().into_bytes(), min_position))
}
