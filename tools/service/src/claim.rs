//! One store per NATS account: `serve` claims the account for its store in the KV bucket
//! `ledger_service` (key `owner`: the store's identity, host and pid) and renews the claim while
//! it runs. A second `serve` on another store finds the claim and refuses to start, naming the
//! other store; the same store (a restart after a crash) takes its own claim over. A claim that
//! is not renewed expires after `CLAIM_TTL`; a clean stop releases it.
//!
//! Not here: the replicated log's writer lease (`replicated`), which decides among instances of
//! one log.

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use crate::limits::CLAIM_TTL;

/// The claim's bucket.
pub const CLAIM_BUCKET: &str = "ledger_service";
/// The claim's key.
pub const CLAIM_KEY: &str = "owner";

/// Who holds the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    store_id: String,
    host: String,
    pid: u32,
}

/// A held claim.
pub struct Claim {
    bucket: kv::Store,
    owner: Owner,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "an unknown host".to_owned())
}

impl Claim {
    /// Claims the account for `store_id`, or says which other store holds it.
    ///
    /// # Errors
    /// Another store's live claim, or NATS failing.
    pub async fn take(js: &jetstream::Context, store_id: uuid::Uuid) -> anyhow::Result<Claim> {
        let bucket = js
            .create_or_update_key_value(kv::Config {
                bucket: CLAIM_BUCKET.to_owned(),
                description: "Contract Ledger: which store serves this account".to_owned(),
                history: 1,
                max_age: CLAIM_TTL,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating the KV bucket {CLAIM_BUCKET}: {e}"))?;
        let owner = Owner {
            store_id: store_id.to_string(),
            host: host_name(),
            pid: std::process::id(),
        };
        let value = serde_json::to_vec(&owner).expect("owners serialize");
        if bucket
            .create(CLAIM_KEY, value.clone().into())
            .await
            .is_err()
        {
            // Taken: by this store (a restart), or by another.
            let held = bucket
                .get(CLAIM_KEY)
                .await
                .map_err(|e| anyhow::anyhow!("reading the claim in {CLAIM_BUCKET}: {e}"))?
                .and_then(|bytes| serde_json::from_slice::<Owner>(&bytes).ok());
            if let Some(other) = held
                && other.store_id != owner.store_id
            {
                anyhow::bail!(
                    "another ledger store serves this NATS account: store {} on {} (pid {}); \
                     two stores on one account would split the ledger. Stop that serve, or \
                     give this store its own account (the claim expires {} s after that serve \
                     stops renewing it)",
                    other.store_id,
                    other.host,
                    other.pid,
                    CLAIM_TTL.as_secs()
                );
            }
            bucket
                .put(CLAIM_KEY, value.into())
                .await
                .map_err(|e| anyhow::anyhow!("taking the claim in {CLAIM_BUCKET}: {e}"))?;
        }
        Ok(Claim { bucket, owner })
    }

    /// Renews the claim (a warning when NATS does not answer: it is renewed again next time).
    pub async fn renew(&self) {
        let value = serde_json::to_vec(&self.owner).expect("owners serialize");
        if let Err(error) = self.bucket.put(CLAIM_KEY, value.into()).await {
            tracing::warn!(%error, "could not renew the claim on the NATS account");
        }
    }

    /// Releases the claim, so another store may serve at once.
    pub async fn release(self) {
        self.bucket.delete(CLAIM_KEY).await.ok();
    }
}
