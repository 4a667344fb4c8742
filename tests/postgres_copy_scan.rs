//! The PostgreSQL source reads whole-relation scans through COPY and renders
//! each row itself: the bytes must equal `row_to_json`'s, on every type, or
//! content hashes (and with them every ledger) would change.
mod common;

use common::TestDb;
use ferry::config::SourceConfig;
use ferry::connectors::postgres::PostgresSource;
use ferry::connectors::{Scan, Source};
use ferry::model::{Object, SourceRow};
use futures::TryStreamExt;
use serde_json::Value;

const TABLE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE odd (
    id bigint PRIMARY KEY, i2 smallint, i4 integer, n numeric, n2 numeric(12,2),
    f4 real, f8 double precision, b boolean, t text, v varchar(20), c char(5),
    u uuid, ts timestamptz, tsn timestamp, d date, tm time, iv interval,
    j json, jb jsonb, arr integer[], tarr text[], by bytea, m mood, p positive,
    pr pair, ip inet, "we ""ird"" Name" text
);
INSERT INTO odd (id) VALUES (1);
INSERT INTO odd VALUES
 (2, -32768, 2147483647, 'NaN', -0.5, 'NaN', 'Infinity', true,
  E'quote " back \\ tab \t nl \n cr \r bell \x01 del \x7f é 🚀', 'x', 'ab',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-03-01 12:34:56.789+05:30',
  '0044-03-15 10:00:00 BC', 'infinity', '23:59:59.999999', '1 year 2 mons -3 days 04:05:06',
  '{"a": [1, 2], "b": "t\tx"}', '{"z": 1, "a": {"k": null}}', '{1,NULL,3}', E'{"a b","c\\"d",NULL}',
  E'\\x00ff5c', 'sad', 7, ROW(1, E'x\ty'), '10.0.0.1/8', 'plain'),
 (3, 0, 0, 'Infinity', 1234567890.99, '-Infinity', -0.0, false,
  '', '', '', NULL, '1999-12-31 23:59:59+00', '2026-01-01 00:00:00', '-infinity', '00:00', '0',
  'null', '"s"', '{}', '{}', '', 'ok', 1, ROW(NULL, NULL), '::1', E'\\'),
 (4, 1, 1, '-Infinity', 0.01, 1.5e-30, 1e300, NULL,
  E'\\N', NULL, NULL, NULL, '1900-01-01 00:00:00.5-08', NULL, '2000-02-29', NULL, '-1 second',
  '[1,2 ,3]', '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, NULL, NULL, '-0.000', 1e-20, 3.4028235e38, 1.7976931348623157e308, NULL,
  NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- Enough rows that a scan is still sending when its first row is read.
INSERT INTO odd (id, t) SELECT g, repeat('x', 200) FROM generate_series(100, 20099) g;
"#;

fn source(db: &TestDb, table: Option<&str>, query: Option<&str>) -> PostgresSource {
    PostgresSource::new(&SourceConfig {
        kind: "postgres".into(),
        url: Some(db.url.clone()),
        table: table.map(str::to_string),
        query: query.map(str::to_string),
        key: vec!["id".into()],
        ..Default::default()
    })
    .expect("source")
}

async fn rows(source: &PostgresSource, scan: Scan<'_>) -> Vec<SourceRow> {
    source
        .scan(scan)
        .await
        .expect("scan")
        .try_collect()
        .await
        .expect("rows")
}

/// Each row as (row_to_json text, key values, cursor text).
fn rendered(rows: Vec<SourceRow>) -> Vec<(String, Vec<Value>, Option<String>)> {
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|row| match row.object {
            Object::Json { json, key } => (json.get().to_string(), key, row.cursor),
            Object::Record(_) => panic!("a PostgreSQL source hands rows over as JSON"),
        })
        .collect();
    out.sort_by_key(|(_, key, _)| key[0].as_i64());
    out
}

async fn expected(
    db: &TestDb,
    cursor: &str,
    filter: &str,
) -> Vec<(String, Vec<Value>, Option<String>)> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT row_to_json(s)::text, json_build_array(s.id)::text, {cursor} FROM odd AS s {filter} ORDER BY id"
    ))
    .fetch_all(&db.pool)
    .await
    .expect("row_to_json");
    rows.into_iter()
        .map(|(json, key, cursor)| (json, serde_json::from_str(&key).unwrap(), cursor))
        .collect()
}

/// Reads a scan whole, checking on the way that the server ran it as COPY
/// (not the `row_to_json` query a relation falls back to): the scan's
/// connection, open until the stream ends, shows its statement, which holds
/// `part`.
async fn rows_through_copy(
    db: &TestDb,
    source: &PostgresSource,
    scan: Scan<'_>,
    part: &str,
) -> Vec<SourceRow> {
    let mut stream = source.scan(scan).await.expect("scan");
    let first = stream.try_next().await.expect("first row").expect("a row");
    let copying: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'COPY (SELECT %' AND strpos(query, $1) > 0",
    )
    .bind(part)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(copying, 1, "the scan runs as COPY");
    let mut rows = vec![first];
    rows.extend(stream.try_collect::<Vec<_>>().await.expect("rows"));
    rows
}

#[tokio::test]
async fn a_full_scan_renders_every_type_as_row_to_json_does() {
    let db = TestDb::new().await;
    db.exec(TABLE).await;
    let source = source(&db, Some("odd"), None);
    let got = rendered(
        rows_through_copy(&db, &source, Scan::All, r#"(SELECT * FROM "odd") AS s) TO"#).await,
    );
    let want = expected(&db, "NULL::text", "").await;
    assert_eq!(got.len(), 20005);
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
    // The same from a query source, where the server describes the columns.
    let query = source_of_query(&db);
    assert_eq!(
        rendered(rows_through_copy(&db, &query, Scan::All, "WHERE id > 0").await),
        want
    );
}

fn source_of_query(db: &TestDb) -> PostgresSource {
    source(db, None, Some("SELECT * FROM odd WHERE id > 0;"))
}

#[tokio::test]
async fn a_first_cursor_scan_is_ordered_and_carries_the_cursor_text() {
    let db = TestDb::new().await;
    db.exec(TABLE).await;
    let source = source(&db, Some("odd"), None);
    let scan = Scan::Since {
        column: "ts",
        from: None,
        lag: std::time::Duration::ZERO,
    };
    let got = rows_through_copy(&db, &source, scan, r#"ORDER BY s."ts""#).await;
    let cursors: Vec<_> = got.iter().map(|r| r.cursor.clone().unwrap()).collect();
    let want: Vec<String> =
        sqlx::query_scalar("SELECT ts::text FROM odd WHERE ts IS NOT NULL ORDER BY ts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(cursors, want, "in cursor order, as the server renders it");
    assert_eq!(
        rendered(got),
        expected(&db, "s.ts::text", "WHERE ts IS NOT NULL").await
    );
    let nulls = rows(&source, Scan::NullCursor { column: "ts" }).await;
    assert_eq!(
        rendered(nulls),
        expected(&db, "NULL::text", "WHERE ts IS NULL").await
    );
}

#[tokio::test]
async fn a_scan_dropped_half_read_leaves_the_source_usable() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE odd (id bigint PRIMARY KEY, t text)")
        .await;
    db.exec("INSERT INTO odd SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        .await;
    let source = source(&db, Some("odd"), None);
    for _ in 0..3 {
        let mut stream = source.scan(Scan::All).await.unwrap();
        assert!(stream.try_next().await.unwrap().is_some());
    }
    // One scan at a time: a connection left inside COPY would break it.
    assert_eq!(rows(&source, Scan::All).await.len(), 20000);
}
