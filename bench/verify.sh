#!/usr/bin/env bash
# `ferry verify` against what reading both tables costs, measured in the
# same invocation (PostgreSQL → PostgreSQL, two databases of one server):
#   reference: `COPY customers TO STDOUT` of the source table, then of the
#              target table (the time a verify that reads every row out of
#              both servers could not beat)
#   V1 identical tables: verify says equal              (target ≤ 0.6 ×)
#   V2 100 scattered differences in the target (40 updated, 30 deleted,
#      30 inserted): exactly those 100 keys reported   (target ≤ 1.0 ×)
#   V3 the same 100 into a SQLite copy of the target, which ferry hashes
#      itself (no target)
#   V4 identical tables whose target generated its own keys: every source
#      row carried through the job's id map (no target); the map and the
#      target's rows are written by SQL (keys shifted by 5,000,000), as a
#      sync would have left them
#   V5 identical tables of rows with a lookup field translated through that
#      id map: the source's rows carried whole through it (against COPY TO
#      of these two tables)
#
#   V6 identical tables, PostgreSQL → MariaDB (loaded with LOAD DATA from
#      the source's rows): no false difference across kinds
#
#   bench/verify.sh                  # 1,000,000 rows
#   ROWS=100000 bench/verify.sh
#   ROWS=10000000 SKIP_SLOW=1 OUT=bench/RESULTS-verify-10M.md bench/verify.sh
#                                    # V1, V2 and V4 only
#
# Needs a local PostgreSQL (PG), MariaDB (root@127.0.0.1:3306, local_infile
# on), and the psql, sqlite3 and mysql clients; writes bench/RESULTS-verify.md (OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
SRC="$PG/ferry_bench_verify_src"
DST="$PG/ferry_bench_verify_dst"
WORK=bench/out/verify
mkdir -p "$WORK"
. bench/lib.sh
needs bench/verify.sh psql sqlite3 jq mysql
build_ferry
DIFF=$'strategy = "diff"'

echo "== preparing $ROWS rows in each database"
for db in ferry_bench_verify_src ferry_bench_verify_dst; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    customers_table "$PG/$db" "$ROWS"
    # Text beyond ASCII, which every database must render alike.
    psql_q "$PG/$db" -c "UPDATE customers SET name = 'Zákazník ' || id || ' — Zürich ✓'" -c "VACUUM FULL ANALYZE customers"
done
customers_job "$WORK/pg" "$SRC" postgres "$DST" "$DIFF"
STATE="sqlite://$PWD/$WORK/state.db"

# A diff job from SRC's table $2 into DST's table $3 with the [fields]
# lines $4, written to $1.
pair_job() {
    cat >"$1" <<TOML
[source]
type = "postgres"
url = "$SRC"
table = "$2"
key = ["id"]

[detect]
$DIFF

[target]
type = "postgres"
url = "$DST"
table = "$3"
key = ["id"]

[fields]
$4

[rules]
owner = "source"
TOML
}

copy_both() {
    psql -X -q "$SRC" -c "COPY customers TO STDOUT" >/dev/null
    psql -X -q "$DST" -c "COPY customers TO STDOUT" >/dev/null
}
export -f copy_both
export SRC DST
# Warm both tables into the cache before anything is timed.
copy_both
read -r ref_wall ref_rss < <(measure bash -c copy_both)
row "reference: COPY TO of source + target" "$ref_wall" "1.00" "$(mib "$ref_rss")" "—"

# verify JOB-FOLDER EXPECTED-EXIT: wall, RSS; the JSON in $WORK/cmd.out.
run_verify() { measure_exit "$2" "$FERRY" --config "$1" --state "$STATE" --output json verify; }
# The counts a verify reported, as missing:extra:different.
counts() { jq -r '.jobs[0].result | "\(.missing):\(.extra):\(.different)"' "$WORK/cmd.out"; }

echo "== V1 identical"
read -r wall rss < <(run_verify "$WORK/pg" 0)
row "V1 verify, identical" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "≤ 0.6 ×"

echo "== V2 100 differences"
# Spread over the table, disjoint: updated ids end in 3, deleted ones in 5.
psql_q "$DST" -c "UPDATE customers SET name = name || ' (edited)' WHERE id IN (SELECT 10 * (g * $ROWS / 400) + 3 FROM generate_series(0, 39) g)" \
    -c "DELETE FROM customers WHERE id IN (SELECT 10 * (g * $ROWS / 300) + 5 FROM generate_series(0, 29) g)" \
    -c "INSERT INTO customers SELECT $ROWS + g, 'x' || g, 'x', 'CZ', 1, now() FROM generate_series(1, 30) g"
read -r wall rss < <(run_verify "$WORK/pg" 1)
got=$(counts)
[ "$got" = "30:30:40" ] || { echo "V2 reported $got (missing:extra:different), expected 30:30:40" >&2; exit 1; }
row "V2 verify, 100 differences (30 missing, 30 extra, 40 different)" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "≤ 1.0 ×"

if [ -z "${SKIP_SLOW:-}" ]; then
echo "== V3 the same into SQLite"
rm -f "$WORK"/target.db*
psql -X -q "$DST" -c "COPY (SELECT id, email, name, country, balance, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00') FROM customers) TO STDOUT (FORMAT csv)" >"$WORK/dst.csv"
sqlite3 "$WORK/target.db" "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, name TEXT, country TEXT, balance NUMERIC, updated_at TEXT)" ".import --csv $WORK/dst.csv customers"
customers_job "$WORK/lite" "$SRC" sqlite "sqlite://$PWD/$WORK/target.db" "$DIFF"
read -r wall rss < <(run_verify "$WORK/lite" 1)
got=$(counts)
[ "$got" = "30:30:40" ] || { echo "V3 reported $got (missing:extra:different), expected 30:30:40" >&2; exit 1; }
row "V3 verify into SQLite, 100 differences (hashed in ferry)" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "—"
fi

echo "== V4 the target's own keys, paired through the id map"
psql_q "$DST" -c "${CUSTOMERS_SCHEMA/customers (/customers_gen (}"
psql -X -q "$SRC" -c "COPY (SELECT id + 5000000, email, name, country, balance, updated_at FROM customers) TO STDOUT" |
    psql -X -q "$DST" -c "COPY customers_gen FROM STDIN"
psql_q "$DST" -c "VACUUM ANALYZE customers_gen"
mkdir -p "$WORK/gen/jobs"
pair_job "$WORK/gen/jobs/customers.toml" customers customers_gen 'email = "email"
name = "name"
country = "country"
balance = "balance"
updated_at = "updated_at"'
GEN_STATE="$WORK/gen-state.db"
rm -f "$GEN_STATE"*
"$FERRY" --config "$WORK/gen" --state "sqlite://$PWD/$GEN_STATE" status >/dev/null
sqlite3 "$GEN_STATE" "INSERT INTO ferry_idmap (job, source_key, target_key)
    SELECT 'customers', '[' || value || ']', '[' || (value + 5000000) || ']' FROM generate_series(1, $ROWS)"
read -r wall rss < <(measure_exit 0 "$FERRY" --config "$WORK/gen" --state "sqlite://$PWD/$GEN_STATE" --output json verify customers)
row "V4 verify, identical, target's own keys (through the id map)" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "—"

if [ -z "${SKIP_SLOW:-}" ]; then
echo "== V5 a lookup field, translated through that id map"
psql_q "$SRC" -c "CREATE TABLE refs (id bigint PRIMARY KEY, customer_id bigint, note text)" \
    -c "INSERT INTO refs SELECT g, g, 'note ' || g FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE refs"
psql_q "$DST" -c "CREATE TABLE refs (id bigint PRIMARY KEY, customer_id bigint, note text)" \
    -c "INSERT INTO refs SELECT g, g + 5000000, 'note ' || g FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE refs"
pair_job "$WORK/gen/jobs/refs.toml" refs refs 'id = "id"
customer_id = { from = "customer_id", lookup = "customers" }
note = "note"'
copy_refs() {
    psql -X -q "$SRC" -c "COPY refs TO STDOUT" >/dev/null
    psql -X -q "$DST" -c "COPY refs TO STDOUT" >/dev/null
}
export -f copy_refs
copy_refs
read -r refs_wall refs_rss < <(measure bash -c copy_refs)
row "reference V5: COPY TO of both refs tables" "$refs_wall" "1.00" "$(mib "$refs_rss")" "—"
read -r wall rss < <(measure_exit 0 "$FERRY" --config "$WORK/gen" --state "sqlite://$PWD/$GEN_STATE" --output json verify refs)
row "V5 verify, identical, a lookup field (rows carried through the map)" "$wall" "$(ratio "$wall" "$refs_wall") × COPY TO refs" "$(mib "$rss")" "—"

echo "== V6 PostgreSQL → MariaDB, identical"
my() { mysql -h 127.0.0.1 -u root --local-infile=1 "$@"; }
MYDB=ferry_bench_verify
psql_q "$SRC" -c "COPY (SELECT id, email, name, country, balance, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
    FROM customers) TO STDOUT (FORMAT csv)" >"$WORK/src.csv"
my -e "DROP DATABASE IF EXISTS $MYDB; CREATE DATABASE $MYDB CHARACTER SET utf8mb4;
    CREATE TABLE $MYDB.customers (id BIGINT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, country TEXT NOT NULL,
        balance DECIMAL(12,2) NOT NULL, updated_at DATETIME(6) NOT NULL);
    LOAD DATA LOCAL INFILE '$PWD/$WORK/src.csv' INTO TABLE $MYDB.customers CHARACTER SET utf8mb4
        FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' (id, email, name, country, balance, updated_at)"
customers_job "$WORK/maria" "$SRC" mysql "mysql://root@127.0.0.1:3306/$MYDB" "$DIFF"
read -r wall rss < <(run_verify "$WORK/maria" 0)
row "V6 verify PostgreSQL → MariaDB, identical (numeric, timestamptz, unicode text)" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "0 false differences"
my -e "DROP DATABASE IF EXISTS $MYDB"
fi

results_table "$ROWS rows"
OUT=${OUT:-bench/RESULTS-verify.md}
cat >"$OUT" <<MD
# ferry verify

Produced by \`ROWS=$ROWS${SKIP_SLOW:+ SKIP_SLOW=1} bench/verify.sh\` on $(date +%F), $(nproc) cores,
PostgreSQL → PostgreSQL (two databases of one local server) unless named.
Each run's report was checked: exit 0 for V1, V4, V5 and V6; exactly 30 missing,
30 extra and 40 different keys for V2 and V3. V4's and V5's id map and
target rows are written by SQL, as a sync would have left them. Ratios are against the reference
measured in the same invocation; wall times are whole processes.

$TABLE
MD
echo "wrote $OUT"
if [ -z "${KEEP:-}" ]; then
    for db in ferry_bench_verify_src ferry_bench_verify_dst; do
        psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    done
    rm -rf "$WORK"
fi
