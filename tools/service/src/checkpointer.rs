//! `serve --signing-key`: a signed checkpoint of the log every `--checkpoint-seconds` (and after
//! each scheduler tick that appended), kept in the store and published on `ledger.checkpoint`
//! (stream `LEDGER_CHECKPOINTS`, kept forever) so that downstream systems hold copies of what the
//! ledger committed to. A checkpoint is made only when the log grew since the last one.
//!
//! Publishing is best effort: a checkpoint NATS did not take stays in the store (`ledgerctl
//! checkpoint` and `prove-consistency` find it), and the next one is published when NATS is back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use ledger::Ledger;
use proofs::SigningKey;
use tokio::sync::{Notify, watch};

/// The stream of published checkpoints.
pub const CHECKPOINTS_STREAM: &str = "LEDGER_CHECKPOINTS";
/// Its subject.
pub const CHECKPOINT_SUBJECT: &str = "ledger.checkpoint";

/// Creates (or keeps) `LEDGER_CHECKPOINTS`: limits retention with no age or size limit — a
/// checkpoint is evidence, and one a minute is half a million in a year, ~300 MB — and no one
/// deletes or purges from it.
///
/// # Errors
/// NATS refusing the stream.
pub async fn set_up(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    js.create_or_update_stream(stream::Config {
        name: CHECKPOINTS_STREAM.to_owned(),
        description: Some(
            "Contract Ledger: signed checkpoints of the log (schemas/json/proofs/checkpoint)"
                .to_owned(),
        ),
        subjects: vec![CHECKPOINT_SUBJECT.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: publisher::DUPLICATE_WINDOW,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream {CHECKPOINTS_STREAM}: {e}"))?;
    Ok(())
}

/// Runs until `stop`: a checkpoint every `every` and whenever `now` is notified, each published
/// with `Nats-Msg-Id` `<log id>:ckpt-<size>` (a repeat after a restart, or from another instance
/// of a replicated log, is dropped).
pub async fn run(
    ledger: Ledger,
    js: jetstream::Context,
    key: Arc<SigningKey>,
    every: Duration,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_size = proofs::checkpoints(&ledger)
        .ok()
        .and_then(|kept| kept.iter().map(|c| c.size).max());
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = now.notified() => {}
            _ = stop.changed() => return,
        }
        if last_size == Some(ledger.committed_position()) {
            continue;
        }
        let made = {
            let ledger = ledger.clone();
            let key = key.clone();
            tokio::task::spawn_blocking(move || proofs::make_checkpoint(&ledger, &key)).await
        };
        let checkpoint = match made {
            Ok(Ok((checkpoint, _))) => checkpoint,
            Ok(Err(error)) => {
                tracing::error!(%error, "making a checkpoint failed");
                continue;
            }
            Err(panicked) => {
                tracing::error!(%panicked, "the checkpoint task");
                continue;
            }
        };
        last_size = Some(checkpoint.size);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}:ckpt-{}", checkpoint.store_id, checkpoint.size).as_str(),
        );
        headers.insert("Ledger-Type", "checkpoint/1");
        headers.insert("Ledger-Position", checkpoint.size.to_string().as_str());
        let body = serde_json::to_vec(&checkpoint).expect("checkpoints serialize");
        let acked = async {
            js.publish_with_headers(CHECKPOINT_SUBJECT, headers, body.into())
                .await?
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        match tokio::time::timeout(crate::limits::CHECKPOINT_PUBLISH_WAIT, acked).await {
            Ok(Ok(_)) => tracing::info!(size = checkpoint.size, "checkpoint published"),
            Ok(Err(error)) => {
                tracing::warn!(%error, size = checkpoint.size, "checkpoint kept, not published");
            }
            Err(_) => tracing::warn!(size = checkpoint.size, "checkpoint kept, not published"),
        }
    }
}
