#!/usr/bin/env bash
# Scale: JOBS jobs (default 500) over as many small PostgreSQL tables
# (TABLE_ROWS = 1,000 rows each; cursor and diff alternate; the first half
# write PostgreSQL tables, the rest SQLite files), each scheduled once a
# minute at its own second, run by REPLICAS (3) `ferry run` daemons on one
# PostgreSQL state store for WINDOW seconds (180) while 1% of the rows of 20
# random tables change every 10 s. It reports, and fails when a target is
# missed:
#   - every (job, tick) of the window ran exactly once across the replicas
#     (run records): 0 duplicates, 0 missed
#   - tick start lag (start - scheduled time): p99 <= 2 s
#   - no replica did more than 50% of the runs
#   - connections to the source database, most seen in pg_stat_activity
#     (sampled every second): <= REPLICAS x max_connections_per_system;
#     the state store's <= REPLICAS x its pool (10)
#   - each daemon's peak RSS <= 128 MiB
#   - /metrics renders in <= 100 ms; `ferry status` and `ferry jobs`
#     answer in <= 0.5 s
#   - a daemon with nothing due uses <= 2% of a core
#   - every target equals its source after the window
#
#   bench/scale.sh
#   JOBS=100 WINDOW=120 bench/scale.sh
#
# Needs a local PostgreSQL (PG, whose max_connections must allow about
# 3 x (10 + 10 + 10) + 5), psql, sqlite3 and curl; writes
# bench/RESULTS-scale.md (OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-500}
TABLE_ROWS=${TABLE_ROWS:-1000}
REPLICAS=${REPLICAS:-3}
WINDOW=${WINDOW:-180}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
OUT=${OUT:-bench/RESULTS-scale.md}
SRC="$PG/ferry_scale_src"
DST="$PG/ferry_scale_dst"
STATE="$PG/ferry_scale_state"
WORK=$PWD/bench/out/scale
BUDGET=10

. bench/lib.sh
needs bench/scale.sh psql sqlite3 curl
build_ferry

rm -rf "$WORK" && mkdir -p "$WORK/config/jobs" "$WORK/idle/jobs" "$WORK/targets"
echo "== $JOBS tables of $TABLE_ROWS rows"
for db in ferry_scale_src ferry_scale_dst ferry_scale_state; do
    psql_q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
psql_q "$SRC" -c "DO \$\$ BEGIN FOR i IN 0..$((JOBS - 1)) LOOP
    EXECUTE format('CREATE TABLE t_%s (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL)', i);
    EXECUTE format('INSERT INTO t_%s SELECT g, %L || g, timestamptz %L + g * interval %L FROM generate_series(1, $TABLE_ROWS) g', i, 'row ', '2026-01-01', '1 second');
    EXECUTE format('CREATE INDEX ON t_%s (updated_at)', i);
END LOOP; END \$\$"
HALF=$((JOBS / 2))
psql_q "$DST" -c "DO \$\$ BEGIN FOR i IN 0..$((HALF - 1)) LOOP
    EXECUTE format('CREATE TABLE t_%s (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL)', i);
END LOOP; END \$\$"

for ((i = 0; i < JOBS; i++)); do
    # A cursor never sees a delete; only the diff jobs carry them.
    if ((i % 2 == 0)); then
        detect=$'strategy = "cursor"\ncursor = "updated_at"'
        deletes=ignore
    else
        detect='strategy = "diff"'
        deletes=propagate
    fi
    if ((i < HALF)); then
        target=$'type = "postgres"\nurl = "'"$DST"$'"'
    else
        : >"$WORK/targets/t_$i.db" # an empty file is an empty database; ferry opens, not creates, it
        target=$'type = "sqlite"\nurl = "sqlite://'"$WORK/targets/t_$i.db"$'"\ncreate = true'
    fi
    cat >"$WORK/config/jobs/job_$i.toml" <<TOML
[source]
type = "postgres"
url = "$SRC"
table = "t_$i"
key = ["id"]

[detect]
$detect

[target]
$target
table = "t_$i"
key = ["id"]

[rules]
owner = "source"
deletes = "$deletes"
TOML
    cp "$WORK/config/jobs/job_$i.toml" "$WORK/idle/jobs/"
done
{
    echo "[engine]"
    echo "max_connections_per_system = $BUDGET"
    echo
    echo "[schedules]"
    for ((i = 0; i < JOBS; i++)); do echo "job_$i = \"$((i % 60)) * * * * *\""; done
} >"$WORK/config/schedules.toml"
{
    echo "[schedules]"
    for ((i = 0; i < JOBS; i++)); do echo "job_$i = \"0 0 0 1 1 *\""; done
} >"$WORK/idle/schedules.toml"

# The daemons: one config folder, each its own metrics port.
PIDS=()
for ((r = 0; r < REPLICAS; r++)); do
    FERRY_STATE_URL=$STATE FERRY_METRICS=127.0.0.1:$((9471 + r)) FERRY_LOG=warn \
        "$FERRY" --config "$WORK/config" run >"$WORK/daemon_$r.log" 2>&1 &
    PIDS+=($!)
done
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; jobs -p | xargs -r kill 2>/dev/null || true; }
trap cleanup EXIT

# The window starts at the second full minute: every job's first run (a
# snapshot of its table) falls in the first.
now=$(date +%s)
T1=$(((now / 60 + 2) * 60))
T2=$((T1 + WINDOW))
echo "== daemons up; the window runs from $(date -u -d "@$T1" +%T) to $(date -u -d "@$T2" +%T) UTC"

# 1% of the rows of 20 random tables every 10 s, until the window ends.
(
    while (($(date +%s) < T2)); do
        sql=""
        for _ in $(seq 20); do
            t=$((RANDOM % JOBS))
            sql+="UPDATE t_$t SET name = name || '.', updated_at = clock_timestamp() WHERE id % 100 = $((RANDOM % 100));"
        done
        psql_q "$SRC" -c "$sql"
        sleep 10
    done
) &
# Connections per database, every second.
(
    while (($(date +%s) < T2)); do
        psql -X -At "$PG/postgres" -c "SELECT datname, count(*) FROM pg_stat_activity
            WHERE datname LIKE 'ferry_scale_%' AND application_name IN ('ferry', '') GROUP BY 1" >>"$WORK/connections.txt"
        sleep 1
    done
) &
sleep $((T2 - $(date +%s)))
echo "== window over; a last minute for the last changes"
sleep 65

# Answers with 500 jobs, from a live daemon and its state store.
metrics_ms=0
for _ in 1 2 3 4 5; do
    t=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:9471/metrics")
    metrics_ms=$(awk -v a="$metrics_ms" -v b="$t" 'BEGIN { b *= 1000; print (b > a ? b : a) }')
done
read -r status_s _ < <(measure "$FERRY" --config "$WORK/config" --state "$STATE" status)
read -r jobs_s _ < <(measure "$FERRY" --config "$WORK/config" --state "$STATE" jobs)
rss_mib=0
for pid in "${PIDS[@]}"; do
    kib=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
    rss_mib=$(awk -v a="$rss_mib" -v b="$kib" 'BEGIN { b /= 1024; print (b > a ? b : a) }')
done
kill -TERM "${PIDS[@]}"
wait "${PIDS[@]}" 2>/dev/null || true

# A daemon with the same 500 jobs and nothing due: its CPU over 20 s.
FERRY_STATE_URL=$STATE FERRY_METRICS=127.0.0.1:9479 FERRY_LOG=warn \
    "$FERRY" --config "$WORK/idle" run >"$WORK/idle.log" 2>&1 &
IDLE=$!
PIDS=("$IDLE")
sleep 5
ticks() { awk '{ print $14 + $15 }' "/proc/$IDLE/stat"; }
before=$(ticks)
sleep 20
idle_pct=$(awk -v a="$before" -v b="$(ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz / 20 * 100 }')
kill -TERM "$IDLE"; wait "$IDLE" 2>/dev/null || true

echo "== run records"
q() { psql -X -At "$STATE" -c "$1"; }
WINDOW_RUNS="SELECT r.* FROM ferry_runs r WHERE r.trigger = 'schedule' AND r.scheduled_for >= ${T1}000 AND r.scheduled_for < ${T2}000"
expected=$(q "SELECT count(*) FROM generate_series(${T1}::bigint, $T2 - 1, 60) m, generate_series(0, $JOBS - 1) i")
missed=$(q "SELECT count(*) FROM generate_series(${T1}::bigint, $T2 - 1, 60) m CROSS JOIN generate_series(0, $JOBS - 1) i
    WHERE NOT EXISTS (SELECT 1 FROM ferry_runs r WHERE r.job = 'job_' || i AND r.scheduled_for = (m + i % 60) * 1000)")
duplicates=$(q "SELECT count(*) FROM (SELECT job, scheduled_for FROM ($WINDOW_RUNS) w GROUP BY 1, 2 HAVING count(*) > 1) d")
not_success=$(q "SELECT count(*) FROM ($WINDOW_RUNS) w WHERE outcome IS DISTINCT FROM 'success'")
read -r lag_p50 lag_p99 < <(q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY started_at - scheduled_for)::numeric / 1000, 3),
    round(percentile_cont(0.99) WITHIN GROUP (ORDER BY started_at - scheduled_for)::numeric / 1000, 3) FROM ($WINDOW_RUNS) w" | tr '|' ' ')
top_share=$(q "SELECT round(100.0 * max(n) / sum(n), 1) FROM (SELECT t.holder, count(*) n FROM ($WINDOW_RUNS) w
    JOIN ferry_ticks t ON t.job = w.job AND t.scheduled_for = w.scheduled_for GROUP BY 1) s")
shares=$(q "SELECT string_agg(n::text, ' / ' ORDER BY n DESC) FROM (SELECT t.holder, count(*) n FROM ($WINDOW_RUNS) w
    JOIN ferry_ticks t ON t.job = w.job AND t.scheduled_for = w.scheduled_for GROUP BY 1) s")
most() { awk -F'|' -v db="$1" '$1 == db && $2 > m { m = $2 } END { print m + 0 }' "$WORK/connections.txt"; }
src_conns=$(most ferry_scale_src)
state_conns=$(most ferry_scale_state)

echo "== every target against its source"
differ=0
for ((i = 0; i < JOBS; i++)); do
    want=$(psql -X -At "$SRC" -c "SELECT id || '|' || name FROM t_$i ORDER BY id" | md5sum)
    if ((i < HALF)); then
        got=$(psql -X -At "$DST" -c "SELECT id || '|' || name FROM t_$i ORDER BY id" | md5sum)
    else
        got=$(sqlite3 "$WORK/targets/t_$i.db" "SELECT id || '|' || name FROM t_$i ORDER BY id" | md5sum)
    fi
    [ "$want" = "$got" ] || { differ=$((differ + 1)); echo "t_$i differs" >&2; }
done

check() { # name value target-expression(awk, on v)
    if awk -v v="$2" "BEGIN { exit !($3) }"; then echo "met"; else echo "**not met**"; fi
}
TABLE="| measure ($JOBS jobs, $REPLICAS replicas, ${WINDOW} s) | value | target | |
|---|---:|---|---|
| (job, tick) pairs in the window | $expected | — | |
| ticks run twice | $duplicates | 0 | $(check dup "$duplicates" "v == 0") |
| ticks missed | $missed | 0 | $(check missed "$missed" "v == 0") |
| runs in the window not \`success\` | $not_success | — | |
| tick start lag p50 / p99, s | $lag_p50 / $lag_p99 | p99 ≤ 2 | $(check lag "$lag_p99" "v <= 2") |
| runs per replica | $shares | — | |
| the busiest replica's share, % | $top_share | ≤ 50 | $(check share "$top_share" "v <= 50") |
| connections to the source database, most at once | $src_conns | ≤ $((REPLICAS * BUDGET)) | $(check src "$src_conns" "v <= $((REPLICAS * BUDGET))") |
| connections to the state store, most at once | $state_conns | ≤ $((REPLICAS * 10)) | $(check state "$state_conns" "v <= $((REPLICAS * 10))") |
| daemon peak RSS, MiB (largest of $REPLICAS) | $(printf %.0f "$rss_mib") | ≤ 128 | $(check rss "$rss_mib" "v <= 128") |
| \`/metrics\` render, ms (slowest of 5) | $(printf %.0f "$metrics_ms") | ≤ 100 | $(check metrics "$metrics_ms" "v <= 100") |
| \`ferry status\`, s | $status_s | ≤ 0.5 | $(check status "$status_s" "v <= 0.5") |
| \`ferry jobs\`, s | $jobs_s | ≤ 0.5 | $(check jobs "$jobs_s" "v <= 0.5") |
| a daemon with nothing due, % of a core | $idle_pct | ≤ 2 | $(check idle "$idle_pct" "v <= 2") |
| targets that differ from their source | $differ | 0 | $(check differ "$differ" "v == 0") |"
echo
echo "$TABLE"
cat >"$OUT" <<EOF
# Scale benchmark results

Produced by \`JOBS=$JOBS WINDOW=$WINDOW bench/scale.sh\` on $(date -u +%Y-%m-%d),
$(nproc) cores (shared by PostgreSQL and the $REPLICAS daemons), $(psql -X -At "$PG/postgres" -c "SHOW server_version") local PostgreSQL.
$JOBS jobs over as many tables of $TABLE_ROWS rows (cursor and diff alternate;
half write PostgreSQL, half SQLite files), each due once a minute at its own
second, $REPLICAS daemons on one PostgreSQL state store; 1% of the rows of 20
random tables changed every 10 s during the window.

$TABLE
EOF
echo "wrote $OUT"
if grep -q "not met" <<<"$TABLE"; then
    echo "a target is not met" >&2
    exit 1
fi
