#!/usr/bin/env bash
# First runs into the other SQL targets, each against the bulk load of the
# same rows that the target's own client does, measured in the same
# invocation:
#   T1 PostgreSQL → MariaDB: ferry's first run (chunk tasks, multi-row
#      statements) vs `LOAD DATA LOCAL INFILE` of the rows as CSV
#   T2 PostgreSQL → SQLite: ferry's first run vs `sqlite3 .import --csv`
#      of the same CSV into a fresh table
# both on the SQLite state store. The CSV export is not timed: the
# references are the loads alone.
#
#   bench/targets.sh                  # 1,000,000 rows
#   ROWS=100000 bench/targets.sh
#
# Needs a local PostgreSQL (PG) and MariaDB (MYSQL, default
# mysql://root@127.0.0.1:3306, with local_infile on), the `mysql` and
# `sqlite3` clients; writes bench/RESULTS-targets.md (OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
MYSQL=${MYSQL:-mysql://root@127.0.0.1:3306}
SRC="$PG/ferry_bench_targets_src"
MYDB=ferry_bench_targets
WORK=bench/out/targets
mkdir -p "$WORK"
. bench/lib.sh
needs bench/targets.sh psql mysql sqlite3
build_ferry
CURSOR=$'strategy = "cursor"\ncursor = "updated_at"'
my() { mysql -h 127.0.0.1 -u root --local-infile=1 "$@"; }

echo "== preparing $ROWS source rows"
psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS ferry_bench_targets_src WITH (FORCE)" -c "CREATE DATABASE ferry_bench_targets_src"
customers_table "$SRC" "$ROWS"
# The rows as the target's client loads them: timestamps in UTC, without offset.
psql_q "$SRC" -c "COPY (SELECT id, email, name, country, balance, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
    FROM customers ORDER BY id) TO STDOUT (FORMAT csv)" >"$WORK/customers.csv"
my -e "DROP DATABASE IF EXISTS $MYDB; CREATE DATABASE $MYDB"

# The same count and sums on both sides: every row arrived, and its numbers
# (balances in cents: SQLite keeps numeric(12,2) as REAL).
sums="count(*), sum(id), sum(CAST(round(balance * 100) AS INTEGER)), sum(length(email) + length(name))"
expected=$(psql -X -At -F: "$SRC" -c "SELECT count(*), sum(id), sum(round(balance * 100)::bigint), sum(length(email) + length(name)) FROM customers")
my_sums() { my -N -B -e "SELECT CONCAT_WS(':', count(*), sum(id), sum(CAST(round(balance * 100) AS SIGNED)), sum(length(email) + length(name))) FROM $MYDB.$1"; }
sqlite_sums() { sqlite3 -separator : "$1" "SELECT $sums FROM customers"; }
check() { # what got
    if [ "$2" != "$expected" ]; then
        echo "MISMATCH after $1: target $2, source $expected" >&2
        exit 1
    fi
}



echo "== T1 PostgreSQL → MariaDB"
customers_job "$WORK/mariadb" "$SRC" mysql "$MYSQL/$MYDB" "$CURSOR" "create = true"
rm -f "$WORK"/state.db*
read -r wall rss < <(measure "$FERRY" --config "$WORK/mariadb" --state "sqlite://$PWD/$WORK/state.db" run --once)
check "T1" "$(my_sums customers)"
my -e "CREATE TABLE $MYDB.reference LIKE $MYDB.customers"
read -r ref_wall ref_rss < <(measure mysql -h 127.0.0.1 -u root --local-infile=1 -e "LOAD DATA LOCAL INFILE '$PWD/$WORK/customers.csv' INTO TABLE $MYDB.reference FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' (id, email, name, country, balance, updated_at)")
check "T1 reference" "$(my_sums reference)"
row "T1 reference: LOAD DATA LOCAL INFILE (CSV)" "$ref_wall" "1.00" "$(mib "$ref_rss")" "—"
row "T1 first run PostgreSQL → MariaDB, sqlite state" "$wall" "$(ratio "$wall" "$ref_wall") × LOAD DATA" "$(mib "$rss")" "≤ 2.0 ×"

echo "== T2 PostgreSQL → SQLite"
rm -f "$WORK"/state.db* "$WORK"/target.db* "$WORK"/reference.db*
customers_job "$WORK/sqlite" "$SRC" sqlite "sqlite://$PWD/$WORK/target.db" "$CURSOR" "create = true"
# ferry opens a target database, it does not create one (a mistyped path
# fails instead of writing elsewhere): an empty file is an empty database.
: >"$WORK/target.db"
read -r wall rss < <(measure "$FERRY" --config "$WORK/sqlite" --state "sqlite://$PWD/$WORK/state.db" run --once)
check "T2" "$(sqlite_sums "$WORK/target.db")"
sqlite3 "$WORK/target.db" .schema | sqlite3 "$WORK/reference.db"
read -r ref_wall ref_rss < <(measure sqlite3 "$WORK/reference.db" ".import --csv $WORK/customers.csv customers")
check "T2 reference" "$(sqlite_sums "$WORK/reference.db")"
row "T2 reference: sqlite3 .import --csv" "$ref_wall" "1.00" "$(mib "$ref_rss")" "—"
row "T2 first run PostgreSQL → SQLite, sqlite state" "$wall" "$(ratio "$wall" "$ref_wall") × .import" "$(mib "$rss")" "≤ 2.0 ×"

results_table "$ROWS rows"
OUT=${OUT:-bench/RESULTS-targets.md}
cat >"$OUT" <<MD
# First runs into MariaDB and SQLite

Produced by \`ROWS=$ROWS bench/targets.sh\` on $(date +%F), $(nproc) cores.
Each run was checked: row count and the sums of ids, balances and text
lengths equal the source's. Ratios are against the reference measured in the
same invocation; wall times are whole processes.

$TABLE
MD
echo "wrote $OUT"
if [ -z "${KEEP:-}" ]; then
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS ferry_bench_targets_src WITH (FORCE)"
    my -e "DROP DATABASE IF EXISTS $MYDB"
    rm -rf "$WORK"
fi
