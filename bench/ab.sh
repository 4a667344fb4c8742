#!/usr/bin/env bash
# A/B of two ferry builds on the same machine and data, runs alternating:
# S4 nothing changed, S2 1% changed (cursor, SQLite state).
#   bench/ab.sh OLD_BINARY NEW_BINARY      (ROWS=1000000 by default)
# e.g. a worktree of the base commit built with `cargo build --profile
# profiling`, against this tree's build. Needs a local PostgreSQL.
set -euo pipefail
OLD=${1:?old ferry binary}
NEW=${2:?new ferry binary}
PG=postgres://postgres@127.0.0.1:5432
ROWS=${ROWS:-1000000}
W=$(mktemp -d)
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
for db in ab_src ab_dst_old ab_dst_new; do q $PG/postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"; done
SCHEMA="CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
    country text NOT NULL, balance numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"
q $PG/ab_src -c "$SCHEMA" -c "CREATE INDEX ON customers (updated_at)" -c "INSERT INTO customers
    SELECT g, 'customer' || g || '@example.com', 'Customer Name ' || g, (ARRAY['CZ','DE','FR','US','GB'])[1 + g % 5],
           (g::bigint * 7919 % 10000000) / 100.0, timestamptz '2026-01-01' + g * interval '1 second'
    FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE customers"
for v in old new; do
  q $PG/ab_dst_$v -c "$SCHEMA"
  mkdir -p $W/$v/jobs
  cat > $W/$v/jobs/customers.toml <<TOML
[source]
type = "postgres"
url = "$PG/ab_src"
table = "customers"
key = ["id"]
[detect]
strategy = "cursor"
cursor = "updated_at"
[batch]
size = 5000
concurrency = 2
[target]
type = "postgres"
url = "$PG/ab_dst_$v"
table = "customers"
key = ["id"]
[rules]
owner = "source"
deletes = "propagate"
TOML
done
bin() { if [ "$1" = old ]; then echo "$OLD"; else echo "$NEW"; fi; }
run() { # version
  local t0 t1; t0=$(date +%s.%N)
  "$(bin $1)" --config $W/$1 --state "sqlite://$W/$1/state.db" run --once >/dev/null 2>$W/$1.err || { cat $W/$1.err; exit 1; }
  t1=$(date +%s.%N); echo "$t1 - $t0" | bc
}
echo "initial: old $(run old) new $(run new)"
s4o=(); s4n=()
for i in 1 2 3 4 5 6; do s4o+=($(run old)); s4n+=($(run new)); done
echo "S4 old: ${s4o[*]}"; echo "S4 new: ${s4n[*]}"
s2o=(); s2n=()
for i in 1 2 3 4; do
  q $PG/ab_src -c "UPDATE customers SET balance = balance + 1, updated_at = now() + interval '$i hour' WHERE id % 100 = $i"
  s2o+=($(run old)); s2n+=($(run new))
done
echo "S2 old: ${s2o[*]}"; echo "S2 new: ${s2n[*]}"
for db in ab_src ab_dst_old ab_dst_new; do q $PG/postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
rm -rf "$W"
