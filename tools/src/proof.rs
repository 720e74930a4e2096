//! `ledgerctl keygen`, `public-key`, `checkpoint`, `audit --bundle`, `verify-bundle`, `prove-consistency`,
//! `verify-consistency`: files and flags around the `proofs` crate. Glue only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use proofs::{PublicKey, SigningKey};
use schemas::proof::{Bundle, Checkpoint, Consistency};

/// The signing key flag's value: `--signing-key FILE` or `LEDGER_SIGNING_KEY`.
pub fn signing_key(path: Option<&Path>) -> anyhow::Result<SigningKey> {
    let path = path.context(
        "this needs a signing key: --signing-key FILE or LEDGER_SIGNING_KEY (ledgerctl keygen makes one)",
    )?;
    Ok(SigningKey::read(path)?)
}

/// The key in `path` (`--signing-key`).
pub fn signing_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::read(path)?)
}

/// `keygen --out FILE`.
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let key = SigningKey::generate()?;
    key.write_new(out)?;
    let public = key.public();
    println!("{}", public.hex());
    eprintln!(
        "ledgerctl: wrote the signing key to {} (mode 0600); its public key is above (key id {})",
        out.display(),
        public.id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `public-key`: the public half of `--signing-key`, to hand to whoever verifies.
pub fn public_key(key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let public = signing_key(key)?.public();
    println!("{}", public.hex());
    eprintln!("ledgerctl: key id {}", public.id());
    Ok(ExitCode::SUCCESS)
}

/// `checkpoint`: a signed checkpoint of the log now, kept in the store and printed as JSON.
pub fn checkpoint(data: &Path, key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let key = signing_key(key)?;
    let ledger = crate::open_ledger(data)?;
    let (checkpoint, _) = proofs::make_checkpoint(&ledger, &key)?;
    println!("{}", serde_json::to_string_pretty(&checkpoint)?);
    Ok(ExitCode::SUCCESS)
}

/// `audit CONTRACT --bundle FILE`: the statement with its proof.
pub fn bundle(
    data: &Path,
    contract: &str,
    period: (Option<&str>, Option<&str>),
    out: &Path,
    key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = signing_key(key)?;
    let ledger = crate::open_ledger(data)?;
    let time = |flag: &str, text: Option<&str>| {
        text.map(|t| projections::query::contract_time(&ledger, contract, flag, t))
            .transpose()
            .map_err(anyhow::Error::from)
    };
    let period = projections::audit::Period {
        from: time("--from", period.0)?,
        to: time("--to", period.1)?,
        known_at: None,
    };
    let bundle = proofs::make_bundle(&ledger, contract, period, &key)?;
    std::fs::write(out, serde_json::to_vec_pretty(&bundle)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "ledgerctl: wrote {} — {} events of {contract} with their proofs, against a checkpoint of \
         the log at size {} signed by key {}",
        out.display(),
        bundle.events.len(),
        bundle.checkpoint.size,
        bundle.checkpoint.key_id
    );
    Ok(ExitCode::SUCCESS)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a {what}", path.display()))
}

/// `verify-bundle FILE --public-key KEY`: exit 0, or 1 naming the first item that fails.
pub fn verify_bundle(file: &Path, key: &str) -> anyhow::Result<ExitCode> {
    let key = PublicKey::parse(key)?;
    let bundle: Bundle = read_json(file, "statement bundle")?;
    Ok(match proofs::verify_bundle(&bundle, &key) {
        Ok(verified) => {
            println!(
                "ok: {} events of {}, complete and unchanged, in the log of store {} at size {} \
                 (key {}); the statement is what they make",
                verified.events,
                verified.contract_id,
                verified.store_id,
                verified.size,
                key.id()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            ExitCode::from(1)
        }
    })
}

/// `prove-consistency --from OLD [--to NEW]`: the proof, from the store.
pub fn prove_consistency(
    data: &Path,
    from: &Path,
    to: Option<&PathBuf>,
) -> anyhow::Result<ExitCode> {
    let ledger = crate::open_ledger(data)?;
    let old: Checkpoint = read_json(from, "checkpoint")?;
    let new: Checkpoint = match to {
        Some(path) => read_json(path, "checkpoint")?,
        None => proofs::checkpoints(&ledger)?
            .into_iter()
            .max_by_key(|checkpoint| checkpoint.size)
            .context("the store keeps no checkpoint yet: make one (ledgerctl checkpoint)")?,
    };
    let proof = proofs::prove_consistency(&ledger, &old, &new)?;
    if to.is_none() {
        eprintln!(
            "ledgerctl: to the newest checkpoint kept here (size {}, made {}): `ledgerctl checkpoint` prints one",
            new.size, new.made_at
        );
    }
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(ExitCode::SUCCESS)
}

/// `verify-consistency OLD NEW PROOF --public-key KEY`.
pub fn verify_consistency(
    old: &Path,
    new: &Path,
    proof: &Path,
    key: &str,
) -> anyhow::Result<ExitCode> {
    let key = PublicKey::parse(key)?;
    let old: Checkpoint = read_json(old, "checkpoint")?;
    let new: Checkpoint = read_json(new, "checkpoint")?;
    let proof: Consistency = read_json(proof, "consistency proof")?;
    Ok(match proofs::verify_consistency(&old, &new, &proof, &key) {
        Ok(()) => {
            println!(
                "ok: the log of size {} is a prefix of the log of size {} (store {}, key {})",
                old.size,
                new.size,
                old.store_id,
                key.id()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            ExitCode::from(1)
        }
    })
}
