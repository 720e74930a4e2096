#!/usr/bin/env bash
# The whole benchmark suite in one command, printing one table (BENCHMARKS.md): installs
# nats-server and PostgreSQL 15 when missing, builds ledgerctl (release), and runs
# `ledgerctl bench suite` on the disk under test. Arguments go to the suite, e.g.
#   bash tools/bench.sh                                  # 100k and 1M events, ~3 min here
#   bash tools/bench.sh --with-10m                       # and 10M events
#   bash tools/bench.sh --work-dir /mnt/disk --millis 3000
# Temporary stores go under --work-dir (default: a temp directory) and are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/nats-server.sh >&2
source tools/postgres.sh >&2
cargo build --release --bin ledgerctl --locked >&2
case " $* " in
    *" --work-dir"*) exec target/release/ledgerctl bench suite "$@" ;;
    *) exec target/release/ledgerctl bench suite --work-dir "${TMPDIR:-/tmp}" "$@" ;;
esac
