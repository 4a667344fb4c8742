# Shared by the benchmark scripts (sourced): the customers table, timing,
# and the results table. Each script sets WORK (a folder for scratch files).

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# Stops the script ($1, for the message) unless each tool after it is installed.
needs() {
    local script=$1
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script needs $tool" >&2; exit 1; }
    done
}

# The profiling profile: release code with full symbols, for perf and
# massif. Sets FERRY to the binary.
build_ferry() {
    cargo build --profile profiling --quiet
    FERRY=$PWD/target/profiling/ferry
}

CUSTOMERS_SCHEMA="CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
    country text NOT NULL, balance numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)"

# The customers table in database URL $1 with $2 rows, each a second later
# than the one before.
customers_table() {
    psql_q "$1" -c "$CUSTOMERS_SCHEMA" -c "CREATE INDEX customers_updated_at ON customers (updated_at)"
    customers_rows "$1" 1 "$2"
    psql_q "$1" -c "VACUUM ANALYZE customers"
}

# customers_rows DB FROM TO [CONDITION]: the rows of ids FROM..TO (those
# of them whose id `g` meets CONDITION).
customers_rows() {
    psql_q "$1" -c "INSERT INTO customers
    SELECT g, 'customer' || g || '@example.com', 'Customer Name ' || g, (ARRAY['CZ','DE','FR','US','GB'])[1 + g % 5],
           (g::bigint * 7919 % 10000000) / 100.0, timestamptz '2026-01-01' + g * interval '1 second'
    FROM generate_series($2, $3) g WHERE ${4:-true}"
}

# wall seconds and peak RSS (KiB) of a command, via /usr/bin/time -v; its
# output goes to $WORK/cmd.out.
measure() { measure_exit 0 "$@"; }

# measure, for a command that must exit with $1 (a verify that finds
# differences exits 1).
measure_exit() {
    local expected=$1 log=$WORK/time.log code
    shift
    set +e
    /usr/bin/time -v "$@" >"$WORK/cmd.out" 2>"$log"
    code=$?
    set -e
    if [ "$code" != "$expected" ]; then
        cat "$WORK/cmd.out" "$log"
        echo "$1 exited $code, expected $expected" >&2
        exit 1
    fi
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    echo "$wall $rss"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
ROWS_TABLE=""
row() { ROWS_TABLE+="| $1 | $2 | $3 | $4 | $5 |"$'\n'; }

# The rows so far as a Markdown table in TABLE, printed; $1 names the scenarios.
results_table() {
    TABLE="| scenario ($1) | wall s | ratio | peak RSS MiB | target |
|---|---:|---:|---:|---|
$ROWS_TABLE"
    echo
    echo "$TABLE"
}

# A job copying customers from database URL $2 into target $4 of type $3,
# in folder $1, detecting with the TOML lines $5; $6: more [target] lines.
customers_job() {
    mkdir -p "$1/jobs"
    cat >"$1/jobs/customers.toml" <<TOML
[source]
type = "postgres"
url = "$2"
table = "customers"
key = ["id"]

[detect]
$5

[batch]
size = ${BATCH:-5000}
concurrency = ${CONCURRENCY:-2}

[target]
type = "$3"
url = "$4"
table = "customers"
key = ["id"]
${6:-}

[rules]
owner = "source"
deletes = "propagate"
TOML
}
