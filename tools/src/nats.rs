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
    let mut refused = service::refusals();
    let answer = tokio::select! {
        answer = client.request(subject.clone(), body.into()) => answer,
        Ok(()) = refused.changed() => {
            let error = refused.borrow().clone().unwrap_or_default();
            anyhow::bail!("the NATS server refused the request on {subject}: {error}");
        }
    };
    let message = match answer {
        Ok(message) => message,
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
    };
    let error_code = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned());
    let body = serde_json::from_slice(&message.payload).with_context(|| {
        format!(
            "the service's reply on {subject} is not JSON: {:?}",
            String::from_utf8_lossy(&message.payload)
        )
    })?;
    Ok(Reply { body, error_code })
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
        let reply = request(
            &client,
            format!("ledger.qry.{view}"),
            serde_json::to_vec(&query.params()).expect("queries serialize"),
        )
        .await?;
        client.flush().await.ok();
        if let Some(code) = reply.error_code {
            let message = reply.body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned();
            anyhow::bail!("the ledger service refused the query ({code}): {message}");
        }
        let body = serde_json::to_vec(&reply.body).expect("JSON values serialize");
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(nats.connect("ledgerctl", None))?;
    if let Remote::Submit(file) = verb {
        let code = crate::contract::submit_each(crate::open_input(file)?, |line, _| {
            let verb = serde_json::from_str::<serde_json::Value>(line)?["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let subject = format!("ledger.cmd.{verb}");
            let reply = runtime.block_on(request(&client, subject, line.as_bytes().to_vec()))?;
            // 500: the service could not record it (not the command's fault): stop, as the
            // embedded store does; resending it with its command_id is safe.
            if reply.error_code.as_deref() == Some("500") {
                anyhow::bail!(
                    "the ledger service could not record it (500): {}",
                    reply.body["error"]["message"]
                        .as_str()
                        .unwrap_or("no message")
                );
            }
            Ok(reply.body)
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

/// `ledgerctl --nats URL watch [CONTRACT] [--count N]`: the KV bucket's current values, then its
/// changes as they come, one JSON line each (the `balance_update` schema).
pub fn watch(
    nats: &NatsArgs,
    contract: Option<&str>,
    count: Option<usize>,
) -> anyhow::Result<std::process::ExitCode> {
    use futures::StreamExt;
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = nats.connect("ledgerctl watch", None).await?;
        let js = async_nats::jetstream::new(client);
        let kv = js
            .get_key_value("ledger_balances")
            .await
            .context("the KV bucket ledger_balances (has `ledgerctl serve` run?)")?;
        let key = match contract {
            Some(contract) => format!("{contract}.*"),
            None => ">".to_owned(),
        };
        // The last value of each key, then every change (LastPerSubject).
        let mut updates = kv
            .watch_with_history(&key)
            .await
            .context("watching ledger_balances")?;
        let mut printed = 0;
        let mut stdout = std::io::stdout().lock();
        while count.is_none_or(|count| printed < count) {
            let Some(entry) = updates.next().await else {
                break;
            };
            let entry = entry.context("reading ledger_balances")?;
            writeln!(stdout, "{}", String::from_utf8_lossy(&entry.value))?;
            stdout.flush()?;
            printed += 1;
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
