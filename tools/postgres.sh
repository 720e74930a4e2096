#!/usr/bin/env bash
# Sourced by tools/test.sh: PostgreSQL 15 from Debian's packages for the side-by-side tests and
# benchmarks (issue 6), installed when missing. The tests start their own server on a temp dir
# and a loopback port as the unprivileged `postgres` user; nothing here starts one. Exports
# PG_BIN (initdb, postgres).
PG_BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$PG_BIN/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
export PG_BIN
echo "postgresql: $("$PG_BIN/postgres" --version)"
