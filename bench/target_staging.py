#!/usr/bin/env python3
"""How a PostgreSQL target could take a batch: the server-side time of each way.

ferry's PostgreSQL target binds a batch as one JSON array and upserts from
`json_populate_recordset`, reading each row's field images in the same
statement (conflict bookkeeping). The alternative the performance issue
names is `COPY` into a temporary staging table and one `INSERT … ON CONFLICT`
from it. This times both, on the same rows in the same run, in batches like
ferry's, each batch its own transaction:

    pip install 'psycopg[binary]'
    ROWS=1000000 BATCH=5000 python3 bench/target_staging.py

The client's own work (rendering JSON or COPY text) is done before timing:
only the round trips and the server's work are measured.
"""
import os
import time

import psycopg

PG = os.environ.get("PG", "postgresql://postgres@127.0.0.1:5432")
ROWS = int(os.environ.get("ROWS", "1000000"))
BATCH = int(os.environ.get("BATCH", "5000"))
DB = "ferry_bench_staging"

COLS = ["email", "name", "country", "balance", "updated_at"]
ALL = ", ".join(f'"{c}"' for c in ["id"] + COLS)
SETS = ", ".join(f'"{c}" = excluded."{c}"' for c in COLS)
CHANGES = " OR ".join(f'ferry_t."{c}" IS DISTINCT FROM excluded."{c}"' for c in COLS)
IMAGE = "CAST(json_build_array({}) AS TEXT)".format(", ".join(f'x."{c}"' for c in COLS))


def upsert(rows):
    return (f'INSERT INTO customers AS ferry_t ({ALL}) SELECT {ALL} FROM {rows} AS x WHERE true '
            f'ON CONFLICT ("id") DO UPDATE SET {SETS} WHERE {CHANGES}')


JSON_ROWS = "json_populate_recordset(NULL::customers, %s::json)"
WAYS = {
    # What ferry runs on an initial sync (images of the incoming rows).
    "JSON parameter, upsert + images (ferry today)":
        ("json", f"WITH x AS MATERIALIZED (SELECT * FROM {JSON_ROWS} WITH ORDINALITY), "
                 f"ferry_write AS ({upsert('(SELECT ' + ALL + ' FROM x)')}) "
                 f"SELECT {IMAGE} FROM x ORDER BY x.ordinality"),
    "JSON parameter, upsert only": ("json", upsert(f"(SELECT {ALL} FROM {JSON_ROWS})")),
    "COPY into staging, upsert + images":
        ("copy", f"WITH ferry_write AS ({upsert('ferry_stage')}) SELECT {IMAGE} FROM ferry_stage x"),
    "COPY into staging, upsert only": ("copy", upsert("ferry_stage")),
    "COPY into the table (no upsert, no images)": ("plain", None),
}


def main():
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    try:
        run()
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def run():
    db = psycopg.connect(f"{PG}/{DB}", autocommit=True)
    for table in ["source", "customers"]:
        db.execute(f"""CREATE TABLE {table} (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
            country text NOT NULL, balance numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL)""")
    db.execute(f"""INSERT INTO source SELECT g, 'customer' || g || '@example.com', 'Customer Name ' || g,
        (ARRAY['CZ','DE','FR','US','GB'])[1 + g % 5], (g::bigint * 7919 % 10000000) / 100.0,
        timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, {ROWS}) g""")
    json_rows = [r[0] for r in db.execute("SELECT row_to_json(s)::text FROM source s ORDER BY id")]
    json_batches = ["[" + ",".join(json_rows[i:i + BATCH]) + "]" for i in range(0, len(json_rows), BATCH)]
    del json_rows
    with db.cursor().copy("COPY (SELECT * FROM source ORDER BY id) TO STDOUT") as copy:
        lines = b"".join(bytes(chunk) for chunk in copy).split(b"\n")[:-1]
    copy_batches = [b"\n".join(lines[i:i + BATCH]) + b"\n" for i in range(0, len(lines), BATCH)]
    del lines
    db.execute("CREATE TEMP TABLE ferry_stage (LIKE customers)")

    results = []
    for name, (kind, sql) in WAYS.items():
        db.execute("TRUNCATE customers")
        db.execute("CHECKPOINT")
        started = time.perf_counter()
        for i in range(len(json_batches)):
            with db.transaction():
                if kind == "json":
                    cur = db.execute(sql, (json_batches[i],), prepare=True)
                    if cur.description:
                        cur.fetchall()
                else:
                    table = "ferry_stage" if kind == "copy" else "customers"
                    with db.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                        copy.write(copy_batches[i])
                    if sql:
                        cur = db.execute(sql, prepare=True)
                        if cur.description:
                            cur.fetchall()
                        db.execute("TRUNCATE ferry_stage")
        results.append((name, time.perf_counter() - started))
        assert db.execute("SELECT count(*) FROM customers").fetchone()[0] == ROWS, name

    reference = results[0][1]
    print(f"| way to write {ROWS} rows in batches of {BATCH} | s | × ferry today |")
    print("|---|---:|---:|")
    for name, seconds in results:
        print(f"| {name} | {seconds:.2f} | {seconds / reference:.2f} |")


if __name__ == "__main__":
    main()
