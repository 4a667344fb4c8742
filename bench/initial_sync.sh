#!/usr/bin/env bash
# Initial sync benchmark: `ferry run --once` (cursor strategy, through the
# durable queue) against a binary `COPY … TO STDOUT | COPY … FROM STDIN` pipe
# of the same table, measured in the same invocation, with the target
# verified equal to the source (checksum over every column).
#
#   bench/initial_sync.sh            # 1,000,000 rows
#   ROWS=100000 bench/initial_sync.sh
#
# Needs a local PostgreSQL (PG, default postgres://postgres@127.0.0.1:5432)
# and writes bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
SRC="$PG/ferry_bench_src"
DST="$PG/ferry_bench_dst"
STATE_PG="$PG/ferry_bench_state"
WORK=bench/out
mkdir -p "$WORK/jobs"

cargo build --release --quiet
FERRY=$PWD/target/release/ferry

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "== preparing $ROWS source rows"
for db in ferry_bench_src ferry_bench_dst ferry_bench_state; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
SCHEMA="CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
    country text NOT NULL, balance numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"
psql_q "$SRC" -c "$SCHEMA" -c "INSERT INTO customers
    SELECT g, 'customer' || g || '@example.com', 'Customer Name ' || g, (ARRAY['CZ','DE','FR','US','GB'])[1 + g % 5],
           (g::bigint * 7919 % 10000000) / 100.0, timestamptz '2026-01-01' + g * interval '1 second'
    FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE customers"
psql_q "$DST" -c "$SCHEMA"
PAYLOAD=$(psql -X -At "$SRC" -c "SELECT pg_size_pretty(pg_total_relation_size('customers'))")

checksum() {
    psql -X -At "$1" -c "SELECT count(*) || ':' || md5(string_agg(md5(c::text), '' ORDER BY id)) FROM customers c"
}
EXPECTED=$(checksum "$SRC")

# wall seconds and peak RSS (KiB) of a command, via /usr/bin/time -v
measure() {
    local log=$WORK/time.log
    /usr/bin/time -v "$@" >"$WORK/cmd.out" 2>"$log" || { cat "$WORK/cmd.out" "$log"; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    echo "$wall $rss"
}

verify() {
    local got
    got=$(checksum "$DST")
    if [ "$got" != "$EXPECTED" ]; then
        echo "MISMATCH after $1: target $got, source $EXPECTED" >&2
        exit 1
    fi
}

echo "== reference: COPY (FORMAT binary) pipe"
psql_q "$DST" -c "TRUNCATE customers"
read -r COPY_WALL COPY_RSS < <(measure bash -c "psql -X -q '$SRC' -c 'COPY customers TO STDOUT (FORMAT binary)' | psql -X -q '$DST' -c 'COPY customers FROM STDIN (FORMAT binary)'")
verify "COPY pipe"

cat >"$WORK/jobs/customers.toml" <<TOML
[source]
type = "postgres"
url = "$SRC"
table = "customers"
key = ["id"]

[detect]
strategy = "cursor"
cursor = "updated_at"

[batch]
size = ${BATCH:-5000}
concurrency = ${CONCURRENCY:-2}

[target]
type = "postgres"
url = "$DST"
table = "customers"
key = ["id"]

[rules]
owner = "source"
TOML

run_ferry() {
    local state=$1
    psql_q "$DST" -c "TRUNCATE customers"
    rm -f "$WORK"/state.db*
    psql_q "$STATE_PG" -c "DROP SCHEMA public CASCADE" -c "CREATE SCHEMA public"
    measure "$FERRY" --config "$WORK" --state "$state" run --once
}

echo "== ferry run --once, SQLite state store"
read -r SQLITE_WALL SQLITE_RSS < <(run_ferry "sqlite://$PWD/$WORK/state.db")
verify "ferry (SQLite state)"
echo "== ferry run --once, PostgreSQL state store"
read -r PG_WALL PG_RSS < <(run_ferry "$STATE_PG")
verify "ferry (PostgreSQL state)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

TABLE=$(cat <<MD
| scenario (S1 initial sync, $ROWS rows, $PAYLOAD) | wall s | × COPY pipe | peak RSS MiB |
|---|---:|---:|---:|
| reference: COPY binary pipe | $COPY_WALL | 1.00 | $(mib "$COPY_RSS") |
| ferry run --once, SQLite state | $SQLITE_WALL | $(ratio "$SQLITE_WALL" "$COPY_WALL") | $(mib "$SQLITE_RSS") |
| ferry run --once, PostgreSQL state | $PG_WALL | $(ratio "$PG_WALL" "$COPY_WALL") | $(mib "$PG_RSS") |
MD
)
echo
echo "$TABLE"

cat >bench/RESULTS.md <<MD
# Benchmark results

Produced by \`bench/initial_sync.sh\` (ROWS=$ROWS, batch size ${BATCH:-5000}, concurrency ${CONCURRENCY:-2}) on $(date -u +%Y-%m-%d),
$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql -X -At "$PG/postgres" -c 'SHOW server_version') local PostgreSQL.
Every run was verified: the target's checksum over every column equals the source's.
Ratios are against the COPY pipe measured in the same invocation.

$TABLE
MD
echo "wrote bench/RESULTS.md"

for db in ferry_bench_src ferry_bench_dst ferry_bench_state; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done
