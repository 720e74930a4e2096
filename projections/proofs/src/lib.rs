//! Proofs for auditors: a statement that a customer or an auditor checks offline, without the
//! store. A **checkpoint** commits to the log at a size (its chain hash, the RFC 9162 root of the
//! log tree, the root of the stream-heads tree) and is signed with Ed25519. A **bundle** carries
//! a contract's statement, every event of the contract as stored, each event's inclusion proof
//! and the proof of the contract stream's head entry — so nothing can be changed, dropped or
//! slipped in — and the checkpoint. A **consistency proof** shows an older checkpoint's log is a
//! prefix of a newer one's: nothing was rewritten.
//!
//! `verify_bundle` and `verify_consistency` need nothing but the files and the public key.
//!
//! Not here: the trees themselves (`ledger::merkle`, `ledger::proofs`), the wire types
//! (`schemas::proof`), files and flags (`ledgerctl`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Verifier;
use ledger::merkle::{self, Leaves};
use ledger::{Hash, Ledger};
use schemas::proof::{
    BUNDLE_FORMAT, Bundle, CHECKPOINT_FORMAT, CONSISTENCY_FORMAT, Checkpoint, Consistency,
    EventProof, HeadProof,
};
use sha2::{Digest, Sha256};

mod keys;

pub use keys::{PublicKey, SigningKey};

/// The projection keyspace where made checkpoints are kept (key: size, then the time made).
pub const CHECKPOINTS: &str = "checkpoints";

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The log failed.
    #[error("{0}")]
    Log(#[from] ledger::Error),
    /// A key file or key text is not usable.
    #[error("{0}")]
    Key(String),
    /// What was asked cannot be proven (no such contract, a checkpoint of another log).
    #[error("{0}")]
    Refused(String),
}

/// Why a proof does not verify: the first item that fails, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item}: {why}")]
pub struct Failure {
    /// What failed (`signature`, `event 3 (position 17)`, `stream head`, `statement`…).
    pub item: String,
    /// Why.
    pub why: String,
}

fn fail(item: impl Into<String>, why: impl Into<String>) -> Failure {
    Failure {
        item: item.into(),
        why: why.into(),
    }
}

pub use ledger::hex;

fn unhex(item: &str, text: &str) -> Result<Hash, Failure> {
    ledger::unhex(text)
        .and_then(|b| <Hash>::try_from(b).ok())
        .ok_or_else(|| fail(item, format!("{text:?} is not 32 bytes of hex")))
}

fn unhex_path(item: &str, path: &[String]) -> Result<Vec<Hash>, Failure> {
    path.iter().map(|h| unhex(item, h)).collect()
}

/// Makes a checkpoint of the log at its committed head, signs it with `key`, keeps it (in
/// `proj.checkpoints`) and returns it with the log tree it committed to.
///
/// # Errors
/// When the log cannot be read or the checkpoint kept.
pub fn make_checkpoint(
    ledger: &Ledger,
    key: &SigningKey,
) -> Result<(Checkpoint, ledger::proofs::LogTree), ProofError> {
    let mut tree = ledger.log_tree()?;
    let size = tree.size();
    let log_root = merkle::root(&mut tree, size)?;
    let heads = tree.heads();
    let head_leaves = ledger::proofs::head_leaves(heads);
    let heads_root = merkle::root(&mut Leaves(&head_leaves), head_leaves.len() as u64)?;
    let chain_hash = match size {
        0 => ledger::GENESIS_HASH,
        _ => ledger
            .read_all(size, 1)?
            .first()
            .map(|e| e.hash)
            .ok_or_else(|| {
                ProofError::Refused(format!("the log has no event at its head {size}"))
            })?,
    };
    let mut checkpoint = Checkpoint {
        format: CHECKPOINT_FORMAT.to_owned(),
        store_id: ledger.log_id()?,
        size,
        chain_hash: hex(&chain_hash),
        log_root: hex(&log_root),
        heads_root: hex(&heads_root),
        heads: heads.len() as u64,
        made_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        key_id: key.public().id(),
        signature: String::new(),
    };
    checkpoint.signature = BASE64.encode(key.sign(checkpoint.signed_text().as_bytes()));
    let store = ledger.projection_store(CHECKPOINTS)?;
    let mut entry_key = b"C".to_vec();
    entry_key.extend_from_slice(&size.to_be_bytes());
    entry_key.extend_from_slice(checkpoint.made_at.as_bytes());
    store.commit(
        vec![(
            entry_key,
            serde_json::to_vec(&checkpoint).expect("checkpoints serialize"),
        )],
        ledger::Checkpoint {
            position: size,
            hash: chain_hash,
        },
    )?;
    Ok((checkpoint, tree))
}

/// The checkpoints kept in this store, oldest first.
///
/// # Errors
/// When the store cannot be read.
pub fn checkpoints(ledger: &Ledger) -> Result<Vec<Checkpoint>, ProofError> {
    let store = ledger.projection_store(CHECKPOINTS)?;
    Ok(store
        .entries(b"C")?
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
        .collect())
}

/// Checks a checkpoint's signature with `key` (and that it is that key's).
///
/// # Errors
/// The [`Failure`], item `signature`.
pub fn verify_checkpoint(checkpoint: &Checkpoint, key: &PublicKey) -> Result<(), Failure> {
    if checkpoint.format != CHECKPOINT_FORMAT {
        return Err(fail(
            "checkpoint",
            format!("format {:?}, not {CHECKPOINT_FORMAT}", checkpoint.format),
        ));
    }
    if checkpoint.key_id != key.id() {
        return Err(fail(
            "signature",
            format!(
                "the checkpoint was signed by key {}, not by the key given ({})",
                checkpoint.key_id,
                key.id()
            ),
        ));
    }
    let signature = BASE64
        .decode(&checkpoint.signature)
        .ok()
        .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
        .ok_or_else(|| fail("signature", "not a base64 Ed25519 signature"))?;
    key.0
        .verify(checkpoint.signed_text().as_bytes(), &signature)
        .map_err(|_| {
            fail(
                "signature",
                "does not match the checkpoint: forged, or made for other contents",
            )
        })
}

/// A contract's statement with its own proof, against a new checkpoint of the log signed with
/// `key`.
///
/// # Errors
/// An unknown contract, a log that cannot be read.
pub fn make_bundle(
    ledger: &Ledger,
    contract_id: &str,
    period: projections::audit::Period,
    key: &SigningKey,
) -> Result<Bundle, ProofError> {
    let (checkpoint, mut tree) = make_checkpoint(ledger, key)?;
    let heads = tree.heads().to_vec();
    let size = checkpoint.size;
    let stream = schemas::contract_stream(contract_id);
    let events: Vec<ledger::RecordedEvent> = projections::contract_events(ledger, contract_id)?
        .into_iter()
        .filter(|event| event.position <= size)
        .collect();
    if events.is_empty() {
        return Err(ProofError::Refused(format!("no contract {contract_id}")));
    }
    let index = heads
        .iter()
        .position(|head| head.stream == stream)
        .ok_or_else(|| ProofError::Refused(format!("no stream {stream} at the checkpoint")))?;
    let head = &heads[index];
    let head_leaves = ledger::proofs::head_leaves(&heads);
    let head_path =
        merkle::inclusion_proof(&mut Leaves(&head_leaves), index as u64, heads.len() as u64)?;
    let chain_hash = unhex("checkpoint", &checkpoint.chain_hash)
        .map_err(|failure| ProofError::Refused(failure.to_string()))?;
    // The proofs on a second thread while this one builds the statement: they share nothing
    // but the log, and each is about half the work.
    let positions: Vec<u64> = events.iter().map(|event| event.position).collect();
    let (proofs, statement) = std::thread::scope(|scope| {
        let proofs = scope.spawn(|| event_proofs(ledger, &mut tree, &positions, size));
        let statement = projections::audit::statement_of_events(
            contract_id,
            events,
            period,
            (size, chain_hash),
        )
        .map_err(|e| ProofError::Refused(e.to_string()))
        .map(|statement| serde_json::to_value(statement).expect("statements serialize"));
        let proofs = proofs.join().expect("the proof thread does not panic");
        (proofs, statement)
    });
    let (proofs, statement) = (proofs?, statement?);
    Ok(Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        contract_id: contract_id.to_owned(),
        from: period
            .from
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        to: period
            .to
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        checkpoint,
        events: proofs,
        stream_head: HeadProof {
            stream,
            version: head.version,
            position: head.position,
            hash: hex(&head.hash),
            index: index as u64,
            path: head_path.iter().map(|h| hex(h)).collect(),
        },
        statement,
    })
}

/// Each event's envelope as stored and its inclusion proof in the log tree of `size`.
fn event_proofs(
    ledger: &Ledger,
    tree: &mut ledger::proofs::LogTree,
    positions: &[u64],
    size: u64,
) -> Result<Vec<EventProof>, ProofError> {
    positions
        .iter()
        .map(|&position| {
            let bytes = ledger.envelope_bytes(position)?.ok_or_else(|| {
                ProofError::Refused(format!("no envelope at position {position}"))
            })?;
            let path = merkle::inclusion_proof(tree, position - 1, size)?;
            Ok(EventProof {
                position,
                envelope: BASE64.encode(bytes),
                path: path.iter().map(|h| hex(h)).collect(),
            })
        })
        .collect()
}

/// What a verified bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The contract.
    pub contract_id: String,
    /// Its events.
    pub events: usize,
    /// The checkpoint's log size.
    pub size: u64,
    /// The store.
    pub store_id: String,
}

/// Verifies a bundle offline: the checkpoint's signature; every event's own hash, place in the
/// contract's stream (versions 1, 2, … with none missing) and inclusion in the log tree; the
/// stream's head entry (so no event was left out or added); and the statement, built again from
/// the events and compared field by field.
///
/// # Errors
/// The first [`Failure`].
pub fn verify_bundle(bundle: &Bundle, key: &PublicKey) -> Result<Verified, Failure> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(fail(
            "bundle",
            format!("format {:?}, not {BUNDLE_FORMAT}", bundle.format),
        ));
    }
    let checkpoint = &bundle.checkpoint;
    verify_checkpoint(checkpoint, key)?;
    let size = checkpoint.size;
    let log_root = unhex("checkpoint", &checkpoint.log_root)?;
    let heads_root = unhex("checkpoint", &checkpoint.heads_root)?;
    let stream = schemas::contract_stream(&bundle.contract_id);
    let mut events = Vec::with_capacity(bundle.events.len());
    for (index, proof) in bundle.events.iter().enumerate() {
        let item = format!("event {} (position {})", index + 1, proof.position);
        let bytes = BASE64
            .decode(&proof.envelope)
            .map_err(|_| fail(&item, "the envelope is not base64"))?;
        let hash = ledger::envelope_hash(&bytes)
            .filter(|hash| bytes.ends_with(hash))
            .ok_or_else(|| {
                fail(
                    &item,
                    "its bytes do not hash to the hash it ends with: changed after it was written",
                )
            })?;
        let event = ledger::decode_envelope(proof.position, &bytes)
            .map_err(|e| fail(&item, format!("does not decode: {e}")))?;
        if event.stream != stream {
            return Err(fail(
                &item,
                format!("belongs to stream {}, not {stream}", event.stream),
            ));
        }
        if event.version != index as u64 + 1 {
            return Err(fail(
                &item,
                format!(
                    "is version {} of the stream where version {} belongs: events missing, added or out of order",
                    event.version,
                    index + 1
                ),
            ));
        }
        if proof.position == 0 || proof.position > size {
            return Err(fail(&item, format!("is not in a log of size {size}")));
        }
        let path = unhex_path(&item, &proof.path)?;
        if !merkle::verify_inclusion(
            &merkle::leaf_hash(&hash),
            proof.position - 1,
            size,
            &path,
            &log_root,
        ) {
            return Err(fail(
                &item,
                "its inclusion proof does not lead to the checkpoint's log root",
            ));
        }
        events.push(event);
    }
    let head = &bundle.stream_head;
    let last = events
        .last()
        .ok_or_else(|| fail("bundle", "holds no event"))?;
    let head_hash = unhex("stream head", &head.hash)?;
    if head.stream != stream
        || head.version != events.len() as u64
        || head.position != last.position
        || head_hash != last.hash
    {
        return Err(fail(
            "stream head",
            format!(
                "the stream's head at the checkpoint is version {} at position {}; the bundle \
                 has {} events ending at position {}: events left out or added",
                head.version,
                head.position,
                events.len(),
                last.position
            ),
        ));
    }
    let entry = ledger::proofs::StreamHead {
        stream: head.stream.clone(),
        version: head.version,
        position: head.position,
        hash: head_hash,
    }
    .entry();
    let head_path = unhex_path("stream head", &head.path)?;
    if !merkle::verify_inclusion(
        &merkle::leaf_hash(&entry),
        head.index,
        checkpoint.heads,
        &head_path,
        &heads_root,
    ) {
        return Err(fail(
            "stream head",
            "its inclusion proof does not lead to the checkpoint's stream-heads root",
        ));
    }
    let parse = |text: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>, Failure> {
        text.as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.to_utc())
                    .map_err(|e| fail("period", e.to_string()))
            })
            .transpose()
    };
    let period = projections::audit::Period {
        from: parse(&bundle.from)?,
        to: parse(&bundle.to)?,
        known_at: None,
    };
    let chain_hash = unhex("checkpoint", &checkpoint.chain_hash)?;
    let rebuilt = projections::audit::statement_of_events(
        &bundle.contract_id,
        events,
        period,
        (size, chain_hash),
    )
    .map_err(|e| fail("statement", e.to_string()))?;
    let rebuilt = serde_json::to_value(rebuilt).expect("statements serialize");
    if rebuilt != bundle.statement {
        let field = first_difference(&rebuilt, &bundle.statement, "statement");
        return Err(fail(
            "statement",
            format!("{field} differs from the statement the events make"),
        ));
    }
    Ok(Verified {
        contract_id: bundle.contract_id.clone(),
        events: bundle.events.len(),
        size,
        store_id: checkpoint.store_id.clone(),
    })
}

/// Where two JSON values first differ, as a path.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                match y.get(key) {
                    Some(other) if other == value => {}
                    Some(other) => return first_difference(value, other, &format!("{at}.{key}")),
                    None => return format!("{at}.{key}"),
                }
            }
            y.keys()
                .find(|key| !x.contains_key(*key))
                .map_or_else(|| at.to_owned(), |key| format!("{at}.{key}"))
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (p, q))| p != q)
            .map_or_else(
                || format!("{at} (length)"),
                |(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")),
            ),
        _ => at.to_owned(),
    }
}

/// The consistency proof from `old` (a checkpoint of this log) to `new` (a later one).
///
/// # Errors
/// A checkpoint of another store, one whose log root this log no longer has at its size (the
/// log was rewritten), or sizes out of order.
pub fn prove_consistency(
    ledger: &Ledger,
    old: &Checkpoint,
    new: &Checkpoint,
) -> Result<Consistency, ProofError> {
    let log_id = ledger.log_id()?;
    for checkpoint in [old, new] {
        if checkpoint.store_id != log_id {
            return Err(ProofError::Refused(format!(
                "the checkpoint of size {} is of store {}, not of this one ({log_id})",
                checkpoint.size, checkpoint.store_id,
            )));
        }
    }
    if old.size == 0 || old.size > new.size {
        return Err(ProofError::Refused(format!(
            "no consistency proof from size {} to {}",
            old.size, new.size
        )));
    }
    let mut tree = ledger.log_tree()?;
    let size = tree.size();
    if new.size > size {
        return Err(ProofError::Refused(format!(
            "the log has {size} events, the newer checkpoint {}",
            new.size
        )));
    }
    for checkpoint in [old, new] {
        let root = merkle::root(&mut tree, checkpoint.size)?;
        if hex(&root) != checkpoint.log_root {
            return Err(ProofError::Refused(format!(
                "this log's root at size {} is {}, not the {} the checkpoint signed: the log was \
                 rewritten after it",
                checkpoint.size,
                hex(&root),
                checkpoint.log_root
            )));
        }
    }
    let path = merkle::consistency_proof(&mut tree, old.size, new.size)?;
    Ok(Consistency {
        format: CONSISTENCY_FORMAT.to_owned(),
        old_size: old.size,
        new_size: new.size,
        path: path.iter().map(|h| hex(h)).collect(),
    })
}

/// Verifies offline that `old`'s log is a prefix of `new`'s: both signatures, one store, and
/// the RFC 9162 consistency proof between their log roots.
///
/// # Errors
/// The first [`Failure`].
pub fn verify_consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &Consistency,
    key: &PublicKey,
) -> Result<(), Failure> {
    verify_checkpoint(old, key)
        .map_err(|f| fail(format!("older checkpoint's {}", f.item), f.why))?;
    verify_checkpoint(new, key)
        .map_err(|f| fail(format!("newer checkpoint's {}", f.item), f.why))?;
    if proof.format != CONSISTENCY_FORMAT {
        return Err(fail("proof", format!("format {:?}", proof.format)));
    }
    if old.store_id != new.store_id {
        return Err(fail(
            "checkpoints",
            format!("of two stores ({} and {})", old.store_id, new.store_id),
        ));
    }
    if proof.old_size != old.size || proof.new_size != new.size {
        return Err(fail(
            "proof",
            format!(
                "is from size {} to {}, the checkpoints are {} and {}",
                proof.old_size, proof.new_size, old.size, new.size
            ),
        ));
    }
    let path = unhex_path("proof", &proof.path)?;
    let old_root = unhex("older checkpoint", &old.log_root)?;
    let new_root = unhex("newer checkpoint", &new.log_root)?;
    if !merkle::verify_consistency(old.size, new.size, &path, &old_root, &new_root) {
        return Err(fail(
            "proof",
            format!(
                "the log of size {} is not a prefix of the log of size {}: rewritten",
                old.size, new.size
            ),
        ));
    }
    Ok(())
}

/// SHA-256, for key ids.
pub(crate) fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}
