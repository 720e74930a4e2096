#!/usr/bin/env bash
# The README's run command: the main job on the embedded store. Submits the worked example of
# DOMAIN.md and a few more contracts to a fresh store, runs the scheduler at the SAB assessment
# date and at the end of the term, and prints balances as finance would read them. Leaves
# nothing running; the store is removed at exit unless LEDGER_DATA names one to keep.
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
l() { "$ledgerctl" --data "$data" "$@"; }
# submit exits 1 when some line was rejected; the worked example has two such lines on purpose.
submit() { local status=0; l submit "$1" || status=$?; [ "$status" -le 1 ] || exit "$status"; }

echo "== submit tests/data/worked-example.jsonl (lines 9 and 10 are rejected on purpose: R5)"
submit tests/data/worked-example.jsonl
echo "== submit tests/data/sample-contracts.jsonl"
submit tests/data/sample-contracts.jsonl
echo "== tick at 2026-03-31: SAB shortfall assessments (R9) and nothing else"
l tick --now 2026-03-31T00:00:00Z
for contract in C-1001 C-2002 C-3003; do
  echo "== balance $contract"
  l --format table balance "$contract"
done
echo "== what we believed on 2026-02-01 about C-1001, by effective time"
l --format table balance C-1001 --as-of 2026-02-01T23:59:59Z
echo "== tick at 2027-02-01: expiry notices (R15) and forfeiture (R8)"
l tick --now 2027-02-01T00:00:00Z
echo "== balance C-1001 after the term"
l --format table balance C-1001
echo "== verify the hash chain"
l --format table verify
