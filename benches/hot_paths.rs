//! Micro-benchmarks of the per-row hot paths, on 1,000 rows shaped like the
//! sync benchmark's `customers`:
//!
//!   cargo bench --bench hot_paths
//!
//! source decode (a PostgreSQL `row_to_json` text into a record), content
//! hashing, ledger key text, task payload encode/decode, and the target's
//! bulk-write payload (the one JSON parameter per statement) from records and
//! from the queued JSON that reaches SQL targets as it is.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry::connectors::sql::to_json;
use ferry::connectors::WriteBatch;
use ferry::model::{content_hash, key_of, key_text, Item, Record};

const ROWS: usize = 1000;

fn source_texts() -> Vec<String> {
    (1..=ROWS)
        .map(|g| {
            format!(
                r#"{{"id":{g},"email":"customer{g}@example.com","name":"Customer Name {g}","country":"{}","balance":{}.{:02},"updated_at":"2026-01-01T00:00:{:02}+00:00"}}"#,
                ["CZ", "DE", "FR", "US", "GB"][g % 5],
                g * 7919 % 100_000,
                g % 100,
                g % 60
            )
        })
        .collect()
}

fn records() -> Vec<Record> {
    source_texts()
        .iter()
        .map(|t| serde_json::from_str(t).expect("sample rows are JSON objects"))
        .collect()
}

fn items(records: &[Record]) -> Vec<Item> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Item {
            version: i as i64 + 1,
            ..Item::upsert(
                key_of(r, &["id".to_string()]).expect("sample rows have an id"),
                r,
            )
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let texts = source_texts();
    let records = records();
    let items = items(&records);
    let payload = serde_json::to_string(&items).expect("items serialise");
    let key = ["id".to_string()];

    let mut g = c.benchmark_group("per 1000 rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("source decode (row_to_json text -> record)", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| {
                    serde_json::from_str::<Record>(t)
                        .expect("JSON object")
                        .len()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("content hash (xxh3 of compact JSON)", |b| {
        b.iter(|| records.iter().map(content_hash).fold(0i64, |a, h| a ^ h))
    });
    g.bench_function("ledger key text", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| key_text(&key_of(r, &key).expect("id")).len())
                .sum::<usize>()
        })
    });
    g.bench_function("task payload encode", |b| {
        b.iter(|| {
            serde_json::to_string(&items)
                .expect("items serialise")
                .len()
        })
    });
    g.bench_function("task payload decode", |b| {
        b.iter_batched(
            || payload.as_str(),
            |p| serde_json::from_str::<Vec<Item>>(p).expect("payload").len(),
            BatchSize::SmallInput,
        )
    });
    let borrowed: Vec<&Record> = records.iter().collect();
    g.bench_function("target write payload encode (records)", |b| {
        b.iter(|| to_json(&borrowed).len())
    });
    let batch = WriteBatch {
        upsert_json: items.iter().filter_map(|i| i.data.as_deref()).collect(),
        ..Default::default()
    };
    g.bench_function("target write payload encode (queued JSON)", |b| {
        b.iter(|| batch.upserts_json().len())
    });
    g.bench_function("target columns of queued JSON", |b| {
        b.iter(|| batch.upsert_fields().len())
    });
    g.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
