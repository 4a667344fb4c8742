#!/usr/bin/env bash
# A/B of two ferry builds on the same machine and data, runs alternating:
# S4 nothing changed, S2 1% changed (cursor, SQLite state).
#   bench/ab.sh OLD_BINARY NEW_BINARY      (ROWS=1000000 by default)
# e.g. a worktree of the base commit built with `cargo build --profile
# profiling`, against this tree's build. Needs a local PostgreSQL.
set -euo pipefail
OLD=$(realpath "${1:?old ferry binary}")
NEW=$(realpath "${2:?new ferry binary}")
cd "$(dirname "$0")/.."
. bench/lib.sh
PG=postgres://postgres@127.0.0.1:5432
ROWS=${ROWS:-1000000}
W=$(mktemp -d)
for db in ab_src ab_dst_old ab_dst_new; do psql_q $PG/postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"; done
customers_table $PG/ab_src "$ROWS"
for v in old new; do
  psql_q $PG/ab_dst_$v -c "$CUSTOMERS_SCHEMA"
  customers_job "$W/$v" "$PG/ab_src" postgres "$PG/ab_dst_$v" $'strategy = "cursor"\ncursor = "updated_at"'
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
  psql_q $PG/ab_src -c "UPDATE customers SET balance = balance + 1, updated_at = now() + interval '$i hour' WHERE id % 100 = $i"
  s2o+=($(run old)); s2n+=($(run new))
done
echo "S2 old: ${s2o[*]}"; echo "S2 new: ${s2n[*]}"
for db in ab_src ab_dst_old ab_dst_new; do psql_q $PG/postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
rm -rf "$W"
