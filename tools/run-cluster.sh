#!/usr/bin/env bash
# `bash tools/run.sh --cluster`: the replicated ledger as a deployment runs it, on loopback.
# Three nats-server nodes clustered with JetStream (`sync_interval: always`), three
# `ledgerctl serve --replicated` instances on their own stores; the worked example submitted over
# NATS; a client buying 60 times while the writer instance is SIGKILLed; the new writer named;
# every command applied once; the killed instance restarted, caught up, and every store
# verified. Ctrl-C or the end stops everything it started and removes its temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."

source tools/nats-server.sh
cargo build --release --bin ledgerctl --locked
ledgerctl=$PWD/target/release/ledgerctl
work=$(mktemp -d)
pids=()
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -9 "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "(kept $work)"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

echo "== three nats-server nodes, clustered, JetStream with sync_interval: always"
declare -a client http route
for n in 1 2 3; do client[n]=$(free_port); http[n]=$(free_port); route[n]=$(free_port); done
routes="nats-route://127.0.0.1:${route[1]}, nats-route://127.0.0.1:${route[2]}, nats-route://127.0.0.1:${route[3]}"
for n in 1 2 3; do
  cat >"$work/n$n.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:${client[n]}
http: 127.0.0.1:${http[n]}
ping_interval: "1s"
ping_max: 2
jetstream { store_dir: "$work/n$n", sync_interval: always }
cluster { name: ledger, listen: 127.0.0.1:${route[n]}, routes: [$routes] }
EOF
  "$NATS_SERVER" -c "$work/n$n.conf" >"$work/n$n.log" 2>&1 &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 600); do
    python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:${http[n]}/healthz', timeout=1)" 2>/dev/null && break
    sleep 0.05
  done
  echo "   n$n: nats://127.0.0.1:${client[n]} (monitoring http://127.0.0.1:${http[n]})"
done
export NATS_URL="nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]},nats://127.0.0.1:${client[3]}"
monitors="http://127.0.0.1:${http[1]},http://127.0.0.1:${http[2]},http://127.0.0.1:${http[3]}"

declare -a serve_pid
start_instance() {
  "$ledgerctl" --data "$work/i$1" serve --replicated --nats-monitor "$monitors" \
    --instance "i$1" --lease-seconds 2 --tick-seconds 0 2>>"$work/i$1.log" &
  serve_pid[$1]=$!
  pids+=($!)
  for _ in $(seq 1200); do grep -q "serving (pid" "$work/i$1.log" 2>/dev/null && break; sleep 0.05; done
}
echo "== three ledgerctl serve --replicated instances, each with its own store"
for i in 1 2 3; do start_instance "$i"; done
writer() { "$ledgerctl" --format json status 2>/dev/null | json 'd["writer"] or ""' || true; }
wait_writer() {
  for _ in $(seq 600); do
    w=$(writer)
    [ -n "$w" ] && [ "$w" != "${1:-}" ] && { echo "$w"; return; }
    sleep 0.05
  done
  echo "no writer" >&2
  exit 1
}
first=$(wait_writer)
echo "   the writer is $first"

l() { "$ledgerctl" "$@"; }
submit() { local status=0; l submit "$1" >/dev/null || status=$?; [ "$status" -le 1 ] || exit "$status"; }
echo "== submit tests/data/worked-example.jsonl over NATS (lines 9 and 10 are rejected on purpose: R5)"
submit tests/data/worked-example.jsonl

touch "$work/answered"
echo "== a client buying 60 times on C-9001, retrying each command with its id until answered"
(
  send() { # retries the same command (same command_id) until the service answers it
    for _ in $(seq 600); do
      status=0
      echo "$1" | "$ledgerctl" --nats-timeout 2 submit - >/dev/null 2>&1 || status=$?
      [ "$status" -le 1 ] && { echo ok >>"$work/answered"; return; }
      sleep 0.1
    done
    exit 1
  }
  send '{"type":"open_contract","command_id":"c9-open","contract_id":"C-9001","customer":"Load Ltd","package":"advanced","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}'
  for i in $(seq 60); do
    send "{\"type\":\"purchase\",\"command_id\":\"c9-buy-$i\",\"contract_id\":\"C-9001\",\"item\":\"proactive_credits\",\"quantity\":\"1\",\"unit_price\":\"250.00\",\"effective_at\":\"2026-01-01T00:00:00Z\"}"
  done
) &
load=$!
touch "$work/answered"
for _ in $(seq 600); do [ "$(wc -l <"$work/answered" 2>/dev/null || echo 0)" -ge 20 ] && break; sleep 0.05; done
echo "== SIGKILL the writer ($first) after $(wc -l <"$work/answered") answers"
{ kill -9 "${serve_pid[${first#i}]}" && wait "${serve_pid[${first#i}]}"; } 2>/dev/null || true
killed_at=$(date +%s.%N)
second=$(wait_writer "$first")
echo "   the new writer is $second, $(python3 -c "import time; print(f'{time.time() - $killed_at:.1f}')") s after the kill"
wait "$load"
echo "   the client's 61 commands were all answered"

echo "== restart $first: it catches up as a mirror"
start_instance "${first#i}"
for _ in $(seq 600); do
  lags=$("$ledgerctl" --format json status | json 'sorted((i["instance"], i["lag"]) for i in d["instances"])')
  [[ "$lags" == *"('i1', 0), ('i2', 0), ('i3', 0)"* ]] && break
  sleep 0.1
done
l --format table status
echo "== balance C-9001 (60 credits bought once each) and C-1001, from any instance"
l --format table balance C-9001
l --format table balance C-1001

echo "== stop the instances (SIGTERM) and verify each store: the same chain everywhere, every command once"
for i in 1 2 3; do kill -TERM "${serve_pid[i]}"; wait "${serve_pid[i]}" || true; done
for i in 1 2 3; do
  head=$(env -u NATS_URL "$ledgerctl" --data "$work/i$i" --format json verify | json '(d["ok"], d["last_position"], d["last_hash"])')
  events=$(env -u NATS_URL "$ledgerctl" --data "$work/i$i" --format json log read --stream contract-C-9001 --limit 1000 | wc -l)
  echo "   i$i: (ok, last position, last hash) = $head; C-9001 has $events events (1 opening + 60 purchases)"
  [ "$events" -eq 61 ] || { echo "   C-9001 should have 61 events" >&2; exit 1; }
done
