//! Issue 19: statements a customer verifies offline. A bundle made by `audit --bundle` verifies
//! with `verify-bundle` and the public key alone (and with the independent Python verifier in
//! tests/verifier/, written from the README); every tamper an auditor fears is named; consistency
//! proofs hold between checkpoints and catch a rewritten log.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tests::ledgerctl;

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// A store with the worked example and the sample contracts, and a signing key; returns the
/// public key.
fn store_and_key(work: &Path) -> String {
    for file in ["worked-example.jsonl", "sample-contracts.jsonl"] {
        let out = ledgerctl(&work.join("data"))
            .args(["submit", data_file(file).to_str().unwrap()])
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(2));
    }
    let out = ledgerctl(&work.join("data"))
        .args(["keygen", "--out", work.join("key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(work.join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    public
}

fn signed(work: &Path, args: &[&str]) -> std::process::Output {
    ledgerctl(&work.join("data"))
        .arg("--signing-key")
        .arg(work.join("key"))
        .args(args)
        .output()
        .unwrap()
}

fn verify(bundle: &Path, public: &str) -> (i32, String) {
    let out = ledgerctl(Path::new("/nonexistent"))
        .args([
            "verify-bundle",
            bundle.to_str().unwrap(),
            "--public-key",
            public,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn python_verify(bundle: &Path, public: &str) -> (i32, String) {
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("verifier/verify_bundle.py"))
        .arg(bundle)
        .arg(public)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The envelope bytes of a bundle's event `index`.
fn envelope(bundle: &serde_json::Value, index: usize) -> Vec<u8> {
    BASE64
        .decode(bundle["events"][index]["envelope"].as_str().unwrap())
        .unwrap()
}

fn set_envelope(bundle: &mut serde_json::Value, index: usize, bytes: &[u8]) {
    bundle["events"][index]["envelope"] = BASE64.encode(bytes).into();
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the bytes are there")
}

#[test]
fn a_bundle_verifies_offline_and_every_tamper_is_named() {
    let work = tempfile::tempdir().unwrap();
    let public = store_and_key(work.path());
    let path = work.path().join("bundle.json");
    let out = signed(
        work.path(),
        &["audit", "C-1001", "--bundle", path.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, said) = verify(&path, &public);
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("ok: "), "{said}");
    let (code, said) = python_verify(&path, &public);
    assert_eq!(code, 0, "the independent verifier: {said}");
    // The bundle's statement is the one `audit --format json` prints for the same head.
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let audit = ledgerctl(&work.path().join("data"))
        .args(["--format", "json", "audit", "C-1001"])
        .output()
        .unwrap();
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(bundle["statement"], audit);
    // It is what schemas/json/proofs/bundle.schema.json documents.
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/json/proofs/bundle.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&bundle), "the bundle fits its schema");

    // Another contract's bundle, for slipping one of its events in.
    let other_path = work.path().join("other.json");
    assert!(
        signed(
            work.path(),
            &["audit", "C-2002", "--bundle", other_path.to_str().unwrap()]
        )
        .status
        .success()
    );
    let other: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&other_path).unwrap()).unwrap();
    // A bundle of another store, signed with the same key.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = ledgerctl(&elsewhere.path().join("data"))
        .args([
            "submit",
            data_file("worked-example.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2));
    let foreign_path = work.path().join("foreign.json");
    let out = ledgerctl(&elsewhere.path().join("data"))
        .arg("--signing-key")
        .arg(work.path().join("key"))
        .args([
            "audit",
            "C-1001",
            "--bundle",
            foreign_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let foreign: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&foreign_path).unwrap()).unwrap();

    type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
    let tampers: Vec<(&str, Tamper, &str)> = vec![
        (
            "a changed amount",
            Box::new(|b| {
                let mut bytes = envelope(b, 1);
                let at = find(&bytes, b"250.00");
                bytes[at] = b'9';
                set_envelope(b, 1, &bytes);
            }),
            "event 2",
        ),
        (
            "a changed amount, the envelope's hash recomputed",
            Box::new(|b| {
                use sha2::Digest;
                let mut bytes = envelope(b, 1);
                let at = find(&bytes, b"250.00");
                bytes[at] = b'9';
                let body = bytes.len() - 32;
                let hash: [u8; 32] = sha2::Sha256::digest(&bytes[..body]).into();
                bytes[body..].copy_from_slice(&hash);
                set_envelope(b, 1, &bytes);
            }),
            "inclusion proof",
        ),
        (
            "a dropped event",
            Box::new(|b| {
                b["events"].as_array_mut().unwrap().remove(3);
            }),
            "event 4",
        ),
        (
            "the last event dropped",
            Box::new(|b| {
                b["events"].as_array_mut().unwrap().pop();
            }),
            "stream head",
        ),
        (
            "two events swapped",
            Box::new(|b| {
                b["events"].as_array_mut().unwrap().swap(2, 3);
            }),
            "event 3",
        ),
        (
            "an event of another contract slipped in",
            Box::new(move |b| {
                let slipped = other["events"][1].clone();
                b["events"].as_array_mut().unwrap().insert(2, slipped);
            }),
            "event 3",
        ),
        (
            "a forged signature",
            Box::new(|b| {
                b["checkpoint"]["signature"] = BASE64.encode([7u8; 64]).into();
            }),
            "signature",
        ),
        (
            "a signature re-used for another checkpoint",
            Box::new(|b| {
                let size = b["checkpoint"]["size"].as_u64().unwrap();
                b["checkpoint"]["size"] = (size + 1).into();
            }),
            "signature",
        ),
        (
            "a checkpoint from another store",
            Box::new(move |b| {
                b["checkpoint"] = foreign["checkpoint"].clone();
            }),
            "inclusion proof",
        ),
        (
            "a statement with a changed figure",
            Box::new(|b| {
                b["statement"]["closing"]["proactive_credits"] = "100".into();
            }),
            "statement",
        ),
    ];
    for (what, tamper, named) in tampers {
        let mut changed = bundle.clone();
        tamper(&mut changed);
        let path = work.path().join("tampered.json");
        std::fs::write(&path, serde_json::to_vec(&changed).unwrap()).unwrap();
        let (code, said) = verify(&path, &public);
        assert_eq!(code, 1, "{what}: {said}");
        assert!(
            said.starts_with("FAILED: ") && said.contains(named),
            "{what} should name {named:?}: {said}"
        );
        let (code, said) = python_verify(&path, &public);
        assert_eq!(code, 1, "the independent verifier missed {what}: {said}");
    }
    // Another key does not verify it.
    let stranger = ledgerctl(Path::new("/nonexistent"))
        .args([
            "keygen",
            "--out",
            work.path().join("stranger").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stranger = String::from_utf8(stranger.stdout).unwrap();
    let (code, said) = verify(&path_of(&work, "bundle.json"), stranger.trim());
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("signature"), "{said}");
}

fn path_of(work: &tempfile::TempDir, name: &str) -> PathBuf {
    work.path().join(name)
}

#[test]
fn consistency_proofs_hold_and_a_rewritten_log_is_caught() {
    let work = tempfile::tempdir().unwrap();
    let public = store_and_key(work.path());
    let write = |name: &str, out: std::process::Output| {
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = work.path().join(name);
        std::fs::write(&path, out.stdout).unwrap();
        path
    };
    let old = write("old.json", signed(work.path(), &["checkpoint"]));
    let more = r#"{"type":"purchase","command_id":"more","contract_id":"C-1001","item":"proactive_credits","quantity":"5","unit_price":"250.00","effective_at":"2026-06-01T00:00:00Z"}"#;
    let out = tests::run_ledgerctl(&work.path().join("data"), &["submit", "-"], more);
    assert!(out.status.success());
    let new = write("new.json", signed(work.path(), &["checkpoint"]));
    let proof = write(
        "proof.json",
        signed(
            work.path(),
            &[
                "prove-consistency",
                "--from",
                old.to_str().unwrap(),
                "--to",
                new.to_str().unwrap(),
            ],
        ),
    );
    let check = |old: &Path, new: &Path, proof: &Path| {
        let out = ledgerctl(Path::new("/nonexistent"))
            .args([
                "verify-consistency",
                old.to_str().unwrap(),
                new.to_str().unwrap(),
                proof.to_str().unwrap(),
                "--public-key",
                &public,
            ])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = check(&old, &new, &proof);
    assert_eq!(code, 0, "{said}");

    // The same store, copied, its log rewritten afterwards the way a careful forger would: an
    // amount changed and every later event re-chained, so `verify` finds nothing; the derived
    // index and log tree dropped so they are built again from the rewritten log. It cannot prove
    // the old checkpoint, and the old proof does not join the old checkpoint to its new one.
    let copy = work.path().join("rewritten");
    tests::copy_dir(&work.path().join("data"), &copy);
    {
        use fjall::{Database, KeyspaceCreateOptions, PersistMode};
        use sha2::Digest;
        let db = Database::builder(copy.join("store")).open().unwrap();
        let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
        let mut previous = [0u8; 32];
        let mut position = 1u64;
        while let Some(stored) = log.get(position.to_be_bytes()).unwrap() {
            let mut bytes = stored.to_vec();
            if position == 2 {
                let at = find(&bytes, b"250.00");
                bytes[at] = b'1';
            }
            let body = bytes.len() - 32;
            bytes[body - 32..body].copy_from_slice(&previous);
            previous = sha2::Sha256::digest(&bytes[..body]).into();
            bytes[body..].copy_from_slice(&previous);
            log.insert(position.to_be_bytes(), bytes).unwrap();
            position += 1;
        }
        let merkle = db
            .keyspace("proj.merkle", KeyspaceCreateOptions::default)
            .unwrap();
        let keys: Vec<Vec<u8>> = merkle
            .iter()
            .map(|guard| guard.key().unwrap().to_vec())
            .collect();
        for key in keys {
            merkle.remove(key).unwrap();
        }
        db.persist(PersistMode::SyncAll).unwrap();
    }
    std::fs::remove_dir_all(copy.join("index")).unwrap();
    let verified = ledgerctl(&copy).arg("verify").output().unwrap();
    assert!(
        verified.status.success(),
        "the forger's copy passes verify: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let in_copy = |args: &[&str]| {
        ledgerctl(&copy)
            .arg("--signing-key")
            .arg(work.path().join("key"))
            .args(args)
            .output()
            .unwrap()
    };
    let refused = in_copy(&["prove-consistency", "--from", old.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rewritten"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let copy_new = write("copy-new.json", in_copy(&["checkpoint"]));
    let copy_proof = write(
        "copy-proof.json",
        in_copy(&["prove-consistency", "--from", copy_new.to_str().unwrap()]),
    );
    assert_eq!(
        check(&copy_new, &copy_new, &copy_proof).0,
        0,
        "the copy is consistent with itself"
    );
    // The old checkpoint's proof does not join it to the rewritten log's checkpoint.
    let (code, said) = check(&old, &copy_new, &proof);
    assert_eq!(
        code, 1,
        "the rewritten log's checkpoint is not joined to the old one: {said}"
    );
    assert!(said.contains("FAILED"), "{said}");
}

#[test]
fn the_public_key_is_printed_again_and_a_bundle_needs_a_key() {
    let work = tempfile::tempdir().unwrap();
    let public = store_and_key(work.path());
    let out = signed(work.path(), &["public-key"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), public);
    let out = ledgerctl(&work.path().join("data"))
        .env_remove("LEDGER_SIGNING_KEY")
        .args([
            "audit",
            "C-1001",
            "--bundle",
            work.path().join("b.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signing-key"));
    assert!(!work.path().join("b.json").exists(), "nothing half-written");
    // keygen never writes over a key.
    let out = ledgerctl(&work.path().join("data"))
        .args(["keygen", "--out", work.path().join("key").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = signed(work.path(), &["public-key"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        public,
        "the key is unchanged"
    );
}

#[test]
fn tick_with_a_key_signs_a_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    store_and_key(work.path());
    let out = signed(work.path(), &["tick", "--now", "2026-06-01T00:00:00Z"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("checkpoint of the log at size"), "{said}");
    // It is kept: a consistency proof from it to itself is made from the store.
    let checkpoint = signed(work.path(), &["checkpoint"]);
    let path = work.path().join("c.json");
    std::fs::write(&path, checkpoint.stdout).unwrap();
    let proof = signed(
        work.path(),
        &["prove-consistency", "--from", path.to_str().unwrap()],
    );
    assert!(
        proof.status.success(),
        "{}",
        String::from_utf8_lossy(&proof.stderr)
    );
}

/// `serve --signing-key` signs checkpoints on its timer and publishes them on
/// `ledger.checkpoint`; a downstream copy later proves the store was not rewritten since.
#[test]
fn serve_publishes_signed_checkpoints_that_later_proofs_extend() {
    let work = tempfile::tempdir().unwrap();
    let public = store_and_key(work.path());
    let server = tests::NatsServer::start().unwrap();
    let key = work.path().join("key");
    let data = work.path().join("data");
    let serve = tests::Serve::start(
        &data,
        &server.url(),
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--checkpoint-seconds",
            "1",
        ],
    )
    .unwrap();
    let out = std::process::Command::new(tests::ledgerctl_path())
        .args(["--nats", &server.url(), "submit"])
        .arg(data_file("worked-example.jsonl"))
        .env_remove("LEDGER_DATA")
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .flat_map(|result| {
            result["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e["position"].as_u64())
        })
        .max()
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The checkpoint downstream keeps: the published one that reached the head (the first ones
    // may be of a shorter log).
    let published: serde_json::Value = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let started = std::time::Instant::now();
        loop {
            if let Ok(stream) = js.get_stream("LEDGER_CHECKPOINTS").await
                && let Ok(message) = stream
                    .get_last_raw_message_by_subject("ledger.checkpoint")
                    .await
            {
                let checkpoint: serde_json::Value =
                    serde_json::from_slice(&message.payload).unwrap();
                if checkpoint["size"].as_u64() >= Some(head) && head > 0 {
                    break checkpoint;
                }
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no checkpoint of size {head} published: {}",
                serve.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert!(serve.terminate().success());
    let old = work.path().join("published.json");
    std::fs::write(&old, serde_json::to_vec(&published).unwrap()).unwrap();
    // More history, a newer checkpoint, and the proof that the published one is its prefix.
    let out = ledgerctl(&data)
        .args([
            "submit",
            data_file("sample-contracts.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2));
    let new = work.path().join("new.json");
    std::fs::write(&new, signed(work.path(), &["checkpoint"]).stdout).unwrap();
    let proof = signed(
        work.path(),
        &[
            "prove-consistency",
            "--from",
            old.to_str().unwrap(),
            "--to",
            new.to_str().unwrap(),
        ],
    );
    assert!(
        proof.status.success(),
        "{}",
        String::from_utf8_lossy(&proof.stderr)
    );
    let proof_path = work.path().join("proof.json");
    std::fs::write(&proof_path, proof.stdout).unwrap();
    let out = ledgerctl(Path::new("/nonexistent"))
        .arg("verify-consistency")
        .args([&old, &new, &proof_path])
        .args(["--public-key", &public])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The log tree kept in `proj.merkle` (stored-level nodes, block roots, stream heads, caught up
/// in pieces of awkward sizes, from the log or from the writer's hand-over, reopened in
/// between) gives the RFC 9162 root of the events'
/// hashes at every size, inclusion proofs that verify, and each stream's last event.
#[test]
fn the_kept_log_tree_matches_a_tree_hashed_from_scratch_at_every_size() {
    use ledger::merkle::{self, Leaves};
    use ledger::{Append, ExpectedVersion, Ledger, NewEvent};

    let dir = tempfile::tempdir().unwrap();
    let mut appended = 0usize;
    // Catch-ups land inside a stored-level run, on its edge, inside and on a block's edge.
    for (round, upto) in [1usize, 15, 16, 17, 255, 256, 257, 600, 1030]
        .iter()
        .enumerate()
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        // Every other round, a tree asked for before the appends: the writer then hands what it
        // commits to the tree in memory; otherwise the tree reads it back from the log.
        if round % 2 == 1 {
            ledger.log_tree().unwrap();
        }
        while appended < *upto {
            let stream = format!("s-{}", appended % 7);
            let event = NewEvent::new("thing_happened", format!("{appended}").into_bytes());
            ledger
                .append_blocking(Append::new(stream, ExpectedVersion::Any, vec![event]))
                .unwrap();
            appended += 1;
        }
        let mut tree = ledger.log_tree().unwrap();
        assert_eq!(tree.size(), *upto as u64, "round {round}");
        let events = ledger.read_all(1, usize::MAX).unwrap();
        let leaves: Vec<_> = events.iter().map(|e| merkle::leaf_hash(&e.hash)).collect();
        for size in [1, 2, 15, 16, 17, 255, 256, 257, 511, 512, 513, 1000, 1030] {
            if size > *upto as u64 {
                continue;
            }
            let expected = merkle::root(&mut Leaves(&leaves[..size as usize]), size).unwrap();
            assert_eq!(
                merkle::root(&mut tree, size).unwrap(),
                expected,
                "size {size}"
            );
            for index in [0, size / 3, size - 1] {
                let path = merkle::inclusion_proof(&mut tree, index, size).unwrap();
                assert!(
                    merkle::verify_inclusion(
                        &leaves[index as usize],
                        index,
                        size,
                        &path,
                        &expected
                    ),
                    "leaf {index} of {size}"
                );
            }
        }
        let heads: Vec<_> = tree
            .heads()
            .iter()
            .map(|h| (h.stream.clone(), h.version, h.position))
            .collect();
        let mut expected: Vec<(String, u64, u64)> = Vec::new();
        for stream in ledger.stream_ids("").unwrap() {
            let last = ledger.read_stream_backward(&stream, None, 1).unwrap();
            expected.push((stream, last[0].version, last[0].position));
        }
        assert_eq!(heads, expected, "round {round}");
    }
}
