//! What an auditor holds: a signed checkpoint of the log, a statement bundle (a contract's
//! statement with every event and the proofs that none was changed, dropped or added), and a
//! consistency proof between two checkpoints. README "Proofs for auditors" documents each byte;
//! an independent verifier can be written from it (tests/verifier/verify_bundle.py is one).
//!
//! Hashes are lowercase hex, signatures and envelopes base64 (standard alphabet, padded).

use serde::{Deserialize, Serialize};

/// The checkpoint format, first line of what is signed.
pub const CHECKPOINT_FORMAT: &str = "contract-ledger-checkpoint/1";
/// The bundle format.
pub const BUNDLE_FORMAT: &str = "contract-ledger-bundle/1";
/// The consistency proof format.
pub const CONSISTENCY_FORMAT: &str = "contract-ledger-consistency/1";

/// A signed commitment to the log at a size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// `contract-ledger-checkpoint/1`.
    pub format: String,
    /// The store's identity (a UUID): which log this is.
    pub store_id: String,
    /// The log's size: the number of events, the position of the last one.
    pub size: u64,
    /// The chain hash at `size`: the last event's own hash (64 zeros for an empty log).
    pub chain_hash: String,
    /// The RFC 9162 root of the log tree: leaf i's entry is the hash of the event at position
    /// i + 1.
    pub log_root: String,
    /// The RFC 9162 root of the stream-heads tree (one leaf per stream, in byte order of its id).
    pub heads_root: String,
    /// The number of streams (leaves of the stream-heads tree).
    pub heads: u64,
    /// When it was made (RFC 3339, UTC, seconds).
    pub made_at: String,
    /// The signing key's id: the first 8 bytes of SHA-256 of its public key, hex.
    pub key_id: String,
    /// Ed25519 over `signed_text()`, base64.
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes the signature covers: the fields in this order, each on its own line
    /// ending in `\n`: format, store_id, size, chain_hash, log_root, heads_root, heads, made_at,
    /// key_id.
    pub fn signed_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.format,
            self.store_id,
            self.size,
            self.chain_hash,
            self.log_root,
            self.heads_root,
            self.heads,
            self.made_at,
            self.key_id
        )
    }
}

/// One event with its proof of inclusion in the log tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventProof {
    /// Its position (leaf index + 1).
    pub position: u64,
    /// The envelope exactly as stored, base64: its last 32 bytes are its hash, SHA-256 of every
    /// byte before them.
    pub envelope: String,
    /// RFC 9162 inclusion path of leaf `position − 1` in the checkpoint's log tree, hex.
    pub path: Vec<String>,
}

/// The contract stream's head with its proof of inclusion in the stream-heads tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadProof {
    /// The stream (`contract-<id>`).
    pub stream: String,
    /// Its last version at the checkpoint: how many events it has.
    pub version: u64,
    /// That event's position.
    pub position: u64,
    /// That event's hash, hex.
    pub hash: String,
    /// The leaf's index in the stream-heads tree.
    pub index: u64,
    /// RFC 9162 inclusion path, hex.
    pub path: Vec<String>,
}

/// A statement with its own proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// `contract-ledger-bundle/1`.
    pub format: String,
    /// The contract.
    pub contract_id: String,
    /// The statement's period: effective at or after (RFC 3339), if bounded.
    pub from: Option<String>,
    /// The statement's period: effective before (RFC 3339), if bounded.
    pub to: Option<String>,
    /// The signed checkpoint everything is proven against.
    pub checkpoint: Checkpoint,
    /// Every event of the contract up to the checkpoint, in version order.
    pub events: Vec<EventProof>,
    /// The contract stream's head entry: its last version, so none can be left out.
    pub stream_head: HeadProof,
    /// The audit statement built from those events, stamped with the checkpoint's size and
    /// chain hash (the `audit --format json` shape).
    pub statement: serde_json::Value,
}

/// A proof that an older checkpoint's log is a prefix of a newer one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// `contract-ledger-consistency/1`.
    pub format: String,
    /// The older checkpoint's size.
    pub old_size: u64,
    /// The newer checkpoint's size.
    pub new_size: u64,
    /// RFC 9162 consistency proof, hex.
    pub path: Vec<String>,
}
