#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds once, runs the whole suite.
# `.ci/run` calls exactly this. Everything a test needs is installed here, never by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# nats-server for the NATS tests (installed when missing).
source tools/nats-server.sh
# PostgreSQL 15 for the ledger-vs-PostgreSQL equality test (installed when missing).
source tools/postgres.sh

# The independent bundle verifier (tests/verifier/verify_bundle.py) needs Ed25519 from the
# `cryptography` package (installed when missing).
python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check "cryptography==48.0.0"

# Build once, in release: the crash and benchmark tests exercise the real fsync path, and the
# test binaries reuse these artifacts.
cargo build --release --workspace --bins --locked
cargo test --release --workspace --locked
