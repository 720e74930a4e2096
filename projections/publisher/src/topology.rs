//! The streams and the KV bucket the publisher writes to, created or updated at start.

use async_nats::jetstream::{self, kv, stream};

use crate::{
    BALANCES_BUCKET, DUPLICATE_WINDOW, EVENTS_STREAM, NOTICES_STREAM, PROGRESS_BUCKET,
    PublishError, RETENTION, SHORTFALLS_STREAM,
};

/// Creates (or updates) the KV buckets and the streams the publisher writes to.
pub async fn set_up(js: &jetstream::Context, replicas: usize) -> Result<(), PublishError> {
    js.create_or_update_key_value(kv::Config {
        bucket: PROGRESS_BUCKET.to_owned(),
        description: "Contract Ledger: the last log position the publisher published".to_owned(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| PublishError::Nats(format!("creating the KV bucket {PROGRESS_BUCKET}: {e}")))?;
    // Current state: a key stays however long its balance stays still (no max_age); the last
    // 64 values of each key are kept.
    js.create_or_update_key_value(kv::Config {
        bucket: BALANCES_BUCKET.to_owned(),
        description: "Contract Ledger: current balance per <contract>.<bucket>".to_owned(),
        history: 64,
        num_replicas: replicas,
        republish: Some(stream::Republish {
            source: format!("$KV.{BALANCES_BUCKET}.>"),
            destination: "ledger.balance.>".to_owned(),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| PublishError::Nats(format!("creating the KV bucket {BALANCES_BUCKET}: {e}")))?;
    // The KV bucket's own stream keeps message ids for de-duplication as long as the others.
    let mut kv_stream = js
        .get_stream(format!("KV_{BALANCES_BUCKET}"))
        .await
        .map_err(|e| PublishError::Nats(format!("reading the KV stream: {e}")))?;
    let mut config = kv_stream
        .info()
        .await
        .map_err(|e| PublishError::Nats(format!("reading the KV stream: {e}")))?
        .config
        .clone();
    if config.duplicate_window != DUPLICATE_WINDOW {
        config.duplicate_window = DUPLICATE_WINDOW;
        js.update_stream(config).await.map_err(|e| {
            PublishError::Nats(format!("setting the KV stream's duplicate window: {e}"))
        })?;
    }
    for (name, subject, description) in [
        (
            EVENTS_STREAM,
            "ledger.evt.>",
            "Contract Ledger: every event, ledger.evt.<contract>.<type> (~ for no contract)",
        ),
        (
            SHORTFALLS_STREAM,
            "ledger.shortfall.>",
            "Contract Ledger: billables, ledger.shortfall.<contract>",
        ),
        (
            NOTICES_STREAM,
            "ledger.notice.>",
            "Contract Ledger: expiry notices, ledger.notice.<contract>",
        ),
    ] {
        js.create_or_update_stream(stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects: vec![subject.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            max_age: RETENTION,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: replicas,
            // A feed is a record: no one removes a message from it (an update may turn these
            // on, never off).
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await
        .map_err(|e| PublishError::Nats(format!("creating the stream {name}: {e}")))?;
    }
    Ok(())
}
