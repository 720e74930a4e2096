#!/usr/bin/env bash
# The README's run command: the main job, as a deployment runs it. Starts nats-server (installed
# when missing) on a free loopback port and `ledgerctl serve` on a fresh store, shows a
# subscriber receiving balance updates, submits the worked example of DOMAIN.md and a few more
# contracts over NATS, runs the scheduler at the SAB assessment date and at the end of the term,
# and prints balances and billable shortfalls as finance would read them. Ctrl-C or the end
# stops everything it started and removes its temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--cluster" ]; then exec bash tools/run-cluster.sh; fi

source tools/nats-server.sh
cargo build --release --bin ledgerctl --locked
ledgerctl=$PWD/target/release/ledgerctl
work=$(mktemp -d)
pids=()
cleanup() {
  # Newest first: the subscriber and serve before nats-server.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== nats-server on a free loopback port"
mkdir -p "$work/ports"
"$NATS_SERVER" -js -a 127.0.0.1 -p -1 -sd "$work/jetstream" --ports_file_dir "$work/ports" \
  >"$work/nats-server.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do ls "$work/ports"/*.ports >/dev/null 2>&1 && break; sleep 0.05; done
url=$(python3 -c 'import glob, json, sys; print(json.load(open(glob.glob(sys.argv[1] + "/*.ports")[0]))["nats"][0])' "$work/ports")
echo "   $url"
export NATS_URL=$url

echo "== ledgerctl serve on a fresh store (its clock set to 2027-06-01: a tick over NATS may only"
echo "   catch up with the service's clock, and the demo ticks through the whole 2026 term)"
"$ledgerctl" --data "$work/ledger-data" serve --tick-seconds 0 --now 2027-06-01T00:00:00Z 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
for _ in $(seq 200); do grep -q "serving (pid" "$work/serve.log" 2>/dev/null && break; sleep 0.05; done

echo "== a subscriber to C-1001's balance updates (ledgerctl watch C-1001)"
"$ledgerctl" watch C-1001 > >(sed -u 's/^/   [subscriber] /') &
pids+=($!)
sleep 0.5

l() { "$ledgerctl" "$@"; }
# submit exits 1 when some line was rejected; the worked example has two such lines on purpose.
submit() { local status=0; l submit "$1" >/dev/null || status=$?; [ "$status" -le 1 ] || exit "$status"; }
echo "== submit tests/data/worked-example.jsonl over NATS (lines 9 and 10 are rejected on purpose: R5)"
submit tests/data/worked-example.jsonl
echo "== submit tests/data/sample-contracts.jsonl over NATS"
submit tests/data/sample-contracts.jsonl
echo "== tick at 2026-03-31: SAB shortfall assessments (R9)"
l tick --now 2026-03-31T00:00:00Z >/dev/null
echo "== tick at 2027-02-01: expiry notices (R15) and forfeiture (R8)"
l tick --now 2027-02-01T00:00:00Z >/dev/null
sleep 0.5
for contract in C-1001 C-2002 C-3003; do
  echo "== balance $contract"
  l --format table balance "$contract"
done
echo "== what we believed on 2026-02-01 about C-1001, by effective time"
l --format table balance C-1001 --as-of 2026-02-01T23:59:59Z
echo "== billable shortfalls"
l --format table shortfalls

echo "== stop serve (SIGTERM: drains, publishes to the head, checkpoints)"
kill -TERM "$serve_pid"
wait "$serve_pid"
echo "== verify the hash chain of the store it kept"
env -u NATS_URL "$ledgerctl" --data "$work/ledger-data" --format table verify
