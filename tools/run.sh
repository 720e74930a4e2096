#!/usr/bin/env bash
# The README's run command: the main job on the embedded store. Until the contract rules land
# (issue 3) it appends a sample of raw contract events to a fresh store, reads them back, and
# verifies the hash chain. Leaves nothing running; the store is removed at exit unless
# LEDGER_DATA names one to keep.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin ledgerctl --locked
ledgerctl=target/release/ledgerctl
if [ -n "${LEDGER_DATA:-}" ]; then
  data=$LEDGER_DATA
else
  data=$(mktemp -d)/ledger-data
  trap 'rm -rf "$(dirname "$data")"' EXIT
fi

echo "== appending tests/data/sample-raw-events.jsonl to $data"
# The sample's sixth line is a stale write, rejected on purpose (exit 1 = some line rejected).
status=0
"$ledgerctl" --data "$data" log append tests/data/sample-raw-events.jsonl || status=$?
[ "$status" -le 1 ] || exit "$status"
echo "== the log"
"$ledgerctl" --data "$data" --format table log read
echo "== verify"
"$ledgerctl" --data "$data" --format table verify
