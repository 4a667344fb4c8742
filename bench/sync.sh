#!/usr/bin/env bash
# Sync benchmarks, each against a reference measured in the same invocation,
# each verified (checksum over every column of source and target):
#   S1 initial sync (cursor, through the durable queue) vs a binary
#      `COPY … TO STDOUT | COPY … FROM STDIN` pipe of the same table
#   S4 nothing changed (cursor): whole-process wall time
#   S2 1% of the rows changed (cursor): whole-process wall time
#   S3 diff strategy, 1% updated and 0.1% deleted, vs `COPY … TO STDOUT`
#      of the source alone
#   R1 `ferry resync --keys` of 1% of the key space after that 1% drifted
#      in the target, vs 0.2 s plus 1.5 × its share of S1
#   F1 `ferry run --once --full` of the whole table after 1% of the
#      target's rows drifted, spread over the key space, vs the COPY pipe
#   D0 the diff again with nothing changed, and D1 with 1% new keys
#      appended at the end, vs `COPY … TO STDOUT` as S3
#   L1 the ledger's bytes per key after the diff job's first load
# for the SQLite and the PostgreSQL state store. SKIP_CURSOR=1 leaves out
# S1, S4, S2, R1 and F1 (the diff's rows alone, with OUT= elsewhere).
#
#   bench/sync.sh                    # 1,000,000 rows
#   ROWS=100000 bench/sync.sh
#   ROWS=10000000 SKIP_MICRO=1 OUT=bench/RESULTS-10M.md bench/sync.sh
#
# then the queue throughput (benches/queue.rs) and the hot-path
# micro-benchmarks (benches/hot_paths.rs) unless SKIP_MICRO is set.
# KEEP=1 keeps the benchmark databases.
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
mkdir -p "$WORK"

. bench/lib.sh
needs bench/sync.sh sqlite3 psql
build_ferry


echo "== preparing $ROWS source rows"
for db in ferry_bench_src ferry_bench_dst ferry_bench_state; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
customers_table "$SRC" "$ROWS"
psql_q "$DST" -c "$CUSTOMERS_SCHEMA"
PAYLOAD=$(psql -X -At "$SRC" -c "SELECT pg_size_pretty(pg_total_relation_size('customers'))")

checksum() {
    psql -X -At "$1" -c "SELECT count(*) || ':' || md5(string_agg(md5(c::text), '' ORDER BY id)) FROM customers c"
}

verify() {
    local got EXPECTED
    EXPECTED=$(checksum "$SRC")
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

customers_job "$WORK/cursor" "$SRC" postgres "$DST" $'strategy = "cursor"\ncursor = "updated_at"'
customers_job "$WORK/diff" "$SRC" postgres "$DST" $'strategy = "diff"\nmax_delete_ratio = 0.05'

fresh() { # state-url: empty target, empty state store
    psql_q "$DST" -c "TRUNCATE customers"
    rm -f "$WORK"/state.db*
    psql_q "$STATE_PG" -c "DROP SCHEMA public CASCADE" -c "CREATE SCHEMA public"
}

# store state-url: the ledger's bytes per key and the state store's MB
# (the SQLite file; PostgreSQL's ledger with its indexes).
ledger_size() {
    if [ "$1" = sqlite ]; then
        sqlite3 "$WORK/state.db" "SELECT sum(pgsize) / (SELECT count(*) FROM ferry_ledger), \
            (SELECT page_count * page_size / 1000000 FROM pragma_page_count, pragma_page_size) \
            FROM dbstat WHERE name LIKE 'ferry_ledger%'" | tr '|' ' '
    else
        psql -X -At "$2" -F ' ' -c "SELECT pg_total_relation_size('ferry_ledger') / count(*), \
            pg_total_relation_size('ferry_ledger') / 1000000 FROM ferry_ledger"
    fi
}

ferry_run() { # config-folder state-url
    measure "$FERRY" --config "$1" --state "$2" run --once
}

row "S1 reference: COPY binary pipe" "$COPY_WALL" "1.00" "$(mib "$COPY_RSS")" "—"

for store in sqlite postgres; do
    if [ "$store" = sqlite ]; then state="sqlite://$PWD/$WORK/state.db"; else state="$STATE_PG"; fi
    echo "== $store state store"
    fresh
    if [ -z "${SKIP_CURSOR:-}" ]; then
        read -r wall rss < <(ferry_run "$WORK/cursor" "$state"); verify "S1 ($store)"
        S1_WALL=$wall
        row "S1 initial sync, $store state" "$wall" "$(ratio "$wall" "$COPY_WALL") × COPY pipe" "$(mib "$rss")" "≤ 2.0 ×, ≤ 64 MiB"
        read -r wall rss < <(ferry_run "$WORK/cursor" "$state"); verify "S4 ($store)"
        row "S4 nothing changed (cursor), $store state" "$wall" "—" "$(mib "$rss")" "≤ 0.1 s"
        # Distinct timestamps, as changes made over time have: with one statement's
        # now() every changed row ties at the watermark, and a cursor re-reads the
        # rows tied at its watermark on every later run (10k rows here, 100k at 10M).
        psql_q "$SRC" -c "UPDATE customers SET name = name || '*', updated_at = clock_timestamp() WHERE id % 100 = 7"
        read -r wall rss < <(ferry_run "$WORK/cursor" "$state"); verify "S2 ($store)"
        row "S2 1% changed (cursor), $store state" "$wall" "—" "$(mib "$rss")" "≤ 0.5 s"
        # R1: 1% of the key space drifted in the target, repaired by a resync of
        # that range alone; the reference is 0.2 s plus 1.5 × 1% of this S1.
        psql_q "$DST" -c "UPDATE customers SET name = 'drift' WHERE id <= $((ROWS / 100))"
        read -r wall rss < <(measure "$FERRY" --config "$WORK/cursor" --state "$state" --output json resync customers --keys "1..$((ROWS / 100))"); verify "R1 ($store)"
        read_rows=$(grep -o '"scanned": *[0-9]*' "$WORK/cmd.out" | grep -o '[0-9]*$')
        row "R1 resync --keys 1% ($read_rows rows read), $store state" "$wall" "$(ratio "$wall" "$(awk -v s="$S1_WALL" 'BEGIN { print 0.2 + 1.5 * s / 100 }')") × (0.2 s + 1.5 × 1% of S1)" "$(mib "$rss")" "≤ 1.0 ×"
        # F1: a whole repair of a full target whose rows drifted by 1%, spread
        # over the key space: every row read and written again under the rules.
        psql_q "$DST" -c "UPDATE customers SET name = 'drift' WHERE id % 100 = 3"
        read -r wall rss < <(measure "$FERRY" --config "$WORK/cursor" --state "$state" run --once --full); verify "F1 ($store)"
        row "F1 run --once --full, target full and 1% drifted, $store state" "$wall" "$(ratio "$wall" "$COPY_WALL") × COPY pipe" "$(mib "$rss")" "≤ 3.0 ×"
    fi

    fresh
    ferry_run "$WORK/diff" "$state" >/dev/null; verify "S3 setup ($store)"
    read -r per_key total_mb < <(ledger_size "$store" "$state")
    row "L1 ledger after the diff's first load, $store state" "—" "$per_key B/key ($total_mb MB in all)" "—" "≤ 48 B/key SQLite, ≤ 64 PostgreSQL"
    psql_q "$SRC" -c "UPDATE customers SET balance = balance + 1 WHERE id % 100 = 11" -c "DELETE FROM customers WHERE id % 1000 = 13"
    read -r ref_wall ref_rss < <(measure bash -c "psql -X -q '$SRC' -c 'COPY customers TO STDOUT' > /dev/null")
    read -r wall rss < <(ferry_run "$WORK/diff" "$state"); verify "S3 ($store)"
    row "S3 reference: COPY customers TO STDOUT" "$ref_wall" "1.00" "$(mib "$ref_rss")" "—"
    row "S3 diff, 1% updated + 0.1% deleted, $store state" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "≤ 1.5 ×, ≤ 64 MiB"
    read -r wall rss < <(ferry_run "$WORK/diff" "$state"); verify "D0 ($store)"
    row "D0 diff, nothing changed, $store state" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "≤ 1.0 ×"
    customers_rows "$SRC" $((ROWS + 1)) $((ROWS + ROWS / 100))
    read -r wall rss < <(ferry_run "$WORK/diff" "$state"); verify "D1 ($store)"
    row "D1 diff, 1% new keys appended, $store state" "$wall" "$(ratio "$wall" "$ref_wall") × COPY TO" "$(mib "$rss")" "≤ 1.0 ×"
    # The next state store's S3 deletes the same rows again.
    psql_q "$SRC" -c "DELETE FROM customers WHERE id > $ROWS"
    customers_rows "$SRC" 1 "$ROWS" "g % 1000 = 13"
done

results_table "$ROWS rows, $PAYLOAD"

QUEUE_TABLE=""
HOT_TABLE=""
MICRO_MD=""
if [ -z "${SKIP_MICRO:-}" ]; then
    echo "== queue: claim + complete of empty tasks"
    QUEUE_TABLE=$(PG="$PG" cargo bench --quiet --bench queue 2>/dev/null | grep '^|')
    echo "$QUEUE_TABLE"
    echo "== hot paths (Criterion)"
    HOT_TABLE="| hot path, per 1000 rows | median µs | µs per row |
|---|---:|---:|
$(cargo bench --quiet --bench hot_paths -- --noplot 2>/dev/null | awk '
        /^per 1000 rows\// { name = substr($0, 15); seen = 0 }
        $1 == "time:" && !seen { seen = 1; v = $4; u = $5; if (u == "ms") v *= 1000; if (u == "ns") v /= 1000;
                  printf "| %s | %.0f | %.3f |\n", name, v, v / 1000 }')"
    echo "$HOT_TABLE"
    MICRO_MD="## Queue throughput

\`cargo bench --bench queue\`: claim + complete of tasks holding no items, through
ferry's own \`Store\` API. One at a time is one claim and one settle transaction
per task, each a durable commit; batches claim N tasks in one statement and
complete them in one transaction.

$QUEUE_TABLE

## Hot paths

\`cargo bench --bench hot_paths\` (Criterion), on 1,000 rows shaped like \`customers\`.

$HOT_TABLE
"
fi

OUT=${OUT:-bench/RESULTS.md}
cat >"$OUT" <<MD
# Benchmark results

Produced by \`ROWS=$ROWS${SKIP_MICRO:+ SKIP_MICRO=1}${SKIP_CURSOR:+ SKIP_CURSOR=1}${OUT:+ OUT=$OUT} bench/sync.sh\` (batch size ${BATCH:-5000}, concurrency ${CONCURRENCY:-2}) on $(date -u +%Y-%m-%d),
$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql -X -At "$PG/postgres" -c 'SHOW server_version') local PostgreSQL.
Every run was verified: the target's checksum over every column equals the source's.
Ratios are against the reference measured in the same invocation; wall times
are whole \`ferry run --once\` processes. Targets are the performance issue's.

$TABLE

$MICRO_MD
MD
echo "wrote $OUT"

[ -n "${KEEP:-}" ] || for db in ferry_bench_src ferry_bench_dst ferry_bench_state; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done
