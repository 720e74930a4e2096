//! The client side of the `ledger` service, so that `ledgerctl --nats URL <verb>` works the same
//! as on the embedded store (the connection flags are `service::NatsArgs`). Subjects, headers
//! and bodies: README "NATS" and `schemas/json/nats/`.

use anyhow::Context;
pub use service::NatsArgs;

/// One request to the service; the reply body and whether it carried a service error.
pub struct Reply {
    /// The body (a result or view, or `{"ok":false,"error":…}`).
    pub body: serde_json::Value,
    /// The `Nats-Service-Error-Code` header, when the service refused the request.
    pub error_code: Option<String>,
}

/// Sends `body` to `subject` and waits for the reply, with errors a user can act on.
pub async fn request(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let message = request_raw(client, subject.clone(), body).await?;
    let error_code = service_error(&message);
    let body = serde_json::from_slice(&message.payload).with_context(|| {
        format!(
            "the service's reply on {subject} is not JSON: {:?}",
            String::from_utf8_lossy(&message.payload)
        )
    })?;
    Ok(Reply { body, error_code })
}

/// The `Nats-Service-Error-Code` of a reply, when it refuses.
fn service_error(message: &async_nats::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned())
}

/// A reply header's value.
fn header(message: &async_nats::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

/// Sends `body` to `subject` and returns the reply as it came.
async fn request_raw(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
) -> anyhow::Result<async_nats::Message> {
    let mut refused = service::refusals();
    let answer = tokio::select! {
        answer = client.request(subject.clone(), body.into()) => answer,
        Ok(()) = refused.changed() => {
            let error = refused.borrow().clone().unwrap_or_default();
            anyhow::bail!("the NATS server refused the request on {subject}: {error}");
        }
    };
    match answer {
        Ok(message) => Ok(message),
        Err(error) => {
            use async_nats::RequestErrorKind;
            anyhow::bail!(match error.kind() {
                RequestErrorKind::NoResponders => format!(
                    "no ledger service answers on {subject} (is `ledgerctl serve` running against this NATS server?)"
                ),
                RequestErrorKind::TimedOut => format!(
                    "the ledger service did not answer {subject} in time (--nats-timeout); \
                     with a command_id, resubmitting it is safe"
                ),
                _ => format!("request to {subject} failed: {error}"),
            })
        }
    }
}

/// Asks the service one read question and returns its answer (what the embedded store would
/// answer, at the head the service had).
pub fn ask(
    nats: &NatsArgs,
    query: &projections::query::Query,
) -> anyhow::Result<projections::query::Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = nats.connect("ledgerctl", None).await?;
        let view = query.view();
        let subject = format!("ledger.qry.{view}");
        let params = serde_json::to_vec(&query.params()).expect("queries serialize");
        let first = request_raw(&client, subject.clone(), params).await?;
        let refused = |message: &async_nats::Message| -> Option<anyhow::Error> {
            let code = service_error(message)?;
            let body: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            let text = body["error"]["message"].as_str().unwrap_or("no message");
            Some(anyhow::anyhow!(
                "the ledger service refused the query ({code}): {text}"
            ))
        };
        if let Some(error) = refused(&first) {
            return Err(error);
        }
        // An answer bigger than one message comes in pages under a cursor: fetch them all.
        let mut body = first.payload.to_vec();
        let pages: usize = header(&first, "Ledger-Pages")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if let Some(cursor) = header(&first, "Ledger-Cursor") {
            for page in 1..pages {
                let ask = serde_json::json!({ "cursor": cursor, "page": page });
                let next =
                    request_raw(&client, subject.clone(), ask.to_string().into_bytes()).await?;
                if let Some(error) = refused(&next) {
                    return Err(error);
                }
                body.extend_from_slice(&next.payload);
            }
        }
        client.flush().await.ok();
        projections::query::Answer::from_json(view, &body)
            .with_context(|| format!("decoding the {view} answer"))
    })
}

/// The verbs `ledgerctl --nats URL` sends to a running `ledgerctl serve`.
pub enum Remote<'a> {
    /// `submit FILE`.
    Submit(&'a std::path::Path),
    /// `tick --now`.
    Tick(&'a str),
}

/// Runs one verb against the service.
pub fn run(nats: &NatsArgs, verb: Remote<'_>) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write;
    use std::process::ExitCode;
    let runtime = crate::pipeline_runtime()?;
    let client = runtime.block_on(nats.connect("ledgerctl", None))?;
    if let Remote::Submit(file) = verb {
        let (reader, size) = crate::open_input_sized(file)?;
        let code = crate::contract::submit_each(reader, size, &runtime, |line, envelope| {
            let subject = format!("ledger.cmd.{}", envelope.body.type_name());
            let (client, line) = (client.clone(), line.as_bytes().to_vec());
            Box::pin(async move {
                let reply = request(&client, subject, line).await?;
                // 500: the service could not record it (not the command's fault): stop, as
                // the embedded store does; resending it with its command_id is safe.
                if reply.error_code.as_deref() == Some("500") {
                    anyhow::bail!(
                        "the ledger service could not record it (500): {}",
                        reply.body["error"]["message"]
                            .as_str()
                            .unwrap_or("no message")
                    );
                }
                Ok(reply.body)
            })
        })?;
        runtime.block_on(client.flush()).ok();
        return Ok(code);
    }
    runtime.block_on(async {
        let code = match verb {
            Remote::Submit(_) => unreachable!("answered above"),
            Remote::Tick(now) => {
                crate::contract::parse_time("--now", now)?;
                let reply = request(
                    &client,
                    "ledger.cmd.tick".to_owned(),
                    serde_json::to_vec(&serde_json::json!({ "now": now }))?,
                )
                .await?;
                if let Some(code) = reply.error_code {
                    anyhow::bail!(
                        "the ledger service refused the tick ({code}): {}",
                        reply.body["error"]["message"]
                    );
                }
                let results = reply.body.as_array().cloned().unwrap_or_default();
                let mut stdout = std::io::stdout().lock();
                for result in &results {
                    writeln!(stdout, "{}", serde_json::to_string(result)?)?;
                }
                eprintln!(
                    "tick at {now}: {} time-driven event(s) appended",
                    results.len()
                );
                ExitCode::SUCCESS
            }
        };
        client.flush().await.ok();
        Ok(code)
    })
}

/// `ledgerctl --nats URL watch [CONTRACT] [--count N] [--from-position P]`: the KV bucket's
/// current values (or, with `--from-position`, every retained update after log position P),
/// then its changes as they come, one JSON line each (the `balance_update` schema). A server
/// that restarts or a connection that drops does not end it: it reconnects without limit, with
/// backoff, and resumes after the last revision it printed, so no update is printed twice or
/// skipped.
pub fn watch(
    nats: &NatsArgs,
    contract: Option<&str>,
    count: Option<usize>,
    from_position: Option<u64>,
) -> anyhow::Result<std::process::ExitCode> {
    use futures::StreamExt;
    use std::io::Write;
    use std::time::Duration;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Reconnects for as long as it runs (as serve does).
        let (reconnects, _) = tokio::sync::watch::channel(0u64);
        let client = nats.connect("ledgerctl watch", Some(reconnects)).await?;
        let js = async_nats::jetstream::new(client);
        let key = match contract {
            Some(contract) => format!("{contract}.*"),
            None => ">".to_owned(),
        };
        let mut printed = 0;
        // The last revision printed: a resumed watch starts after it.
        let mut last_revision: Option<u64> = None;
        let mut backoff = Duration::from_millis(100);
        let mut stdout = std::io::stdout().lock();
        'watching: while count.is_none_or(|count| printed < count) {
            let kv = match js.get_key_value("ledger_balances").await {
                Ok(kv) => kv,
                Err(error) if last_revision.is_none() && printed == 0 && backoff.as_secs() >= 5 => {
                    anyhow::bail!(
                        "the KV bucket ledger_balances (has `ledgerctl serve` run?): {error}"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "the KV bucket ledger_balances is not there yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let watched = match (last_revision, from_position) {
                (Some(revision), _) => kv.watch_from_revision(&key, revision + 1).await,
                // Everything retained, the older part filtered by position below.
                (None, Some(_)) => kv.watch_from_revision(&key, 1).await,
                // The last value of each key, then every change (LastPerSubject).
                (None, None) => kv.watch_with_history(&key).await,
            };
            let mut updates = match watched {
                Ok(updates) => updates,
                Err(error) => {
                    tracing::warn!(%error, "could not watch ledger_balances; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            while count.is_none_or(|count| printed < count) {
                let entry = match updates.next().await {
                    Some(Ok(entry)) => entry,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the watch broke; resuming after the last update");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue 'watching;
                    }
                    None => continue 'watching,
                };
                backoff = Duration::from_millis(100);
                last_revision = Some(entry.revision);
                if let Some(after) = from_position {
                    let position = serde_json::from_slice::<serde_json::Value>(&entry.value)
                        .ok()
                        .and_then(|value| value["position"].as_u64())
                        .unwrap_or(0);
                    if position <= after {
                        continue;
                    }
                }
                writeln!(stdout, "{}", String::from_utf8_lossy(&entry.value))?;
                stdout.flush()?;
                printed += 1;
            }
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
