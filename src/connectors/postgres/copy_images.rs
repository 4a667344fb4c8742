//! The images of rows a `COPY` just inserted, read back by key range with
//! `COPY … TO STDOUT` and rendered in ferry as the server renders them
//! (the source scan's [`CopyRows`]), instead of one index probe and one
//! `json_build_array` per row: 1M rows cost the server 1.2 s of CPU this
//! way, 4.5 s the other (`bench/NOTES.md`). Only for a single integer key,
//! whose range bounds the rows it can return; else None, and the caller
//! probes by key.
use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{Column, Executor, Statement, TypeInfo};

use super::copy_rows::CopyRows;
use crate::connectors::sql::quote_ident;

/// A range this many times wider than the rows looked for is not worth
/// scanning (a sparse key space, or rows read out of key order).
const WIDEST: i64 = 4;

/// Each inserted row's field hashes (the images of `fields`), in the order
/// of `keys`, read from `table` keyed by `key`. None when the range does not
/// pay, the rows cannot be rendered in ferry, or a key is not found.
pub(super) async fn by_key_range(
    conn: &mut PgConnection,
    table: &str,
    key: &str,
    fields: &[String],
    keys: &[i64],
) -> Result<Option<Vec<Vec<u32>>>, sqlx::Error> {
    let (Some(lo), Some(hi)) = (keys.iter().min(), keys.iter().max()) else {
        return Ok(Some(Vec::new()));
    };
    if hi.saturating_sub(*lo) >= WIDEST.saturating_mul(keys.len() as i64) {
        return Ok(None);
    }
    let selected: Vec<String> = std::iter::once(key)
        .chain(fields.iter().map(String::as_str))
        .map(quote_ident)
        .collect();
    let relation = format!("SELECT {} FROM {table}", selected.join(", "));
    let describe = format!("SELECT * FROM ({relation}) AS s");
    let described = conn.prepare(describe.as_str()).await?;
    let columns: Vec<(String, String)> = described
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
        .collect();
    let tail = format!(" WHERE s.{} BETWEEN {lo} AND {hi}", quote_ident(key));
    let Some(copy) = CopyRows::plan(&relation, &columns, &[key.to_string()], None, &tail) else {
        return Ok(None);
    };
    let mut text = Vec::new();
    let mut chunks = conn.copy_out_raw(copy.sql()).await?;
    while let Some(chunk) = chunks.try_next().await? {
        text.extend_from_slice(&chunk);
    }
    drop(chunks);
    let mut found: HashMap<i64, Vec<u32>> = HashMap::with_capacity(keys.len());
    let (mut scratch, mut json) = (Vec::new(), Vec::new());
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut id = None;
        let mut hashes = Vec::with_capacity(fields.len());
        let rendered = copy.each_field(line, &mut scratch, &mut json, |i, value| match i {
            // The key column, first: an integer's JSON is its text.
            0 => {
                id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
            }
            _ => hashes.push(xxhash_rust::xxh3::xxh3_64(value) as u32),
        });
        match (rendered, id) {
            (Ok(_), Some(id)) => found.insert(id, hashes),
            _ => return Ok(None),
        };
    }
    Ok(keys.iter().map(|k| found.remove(k)).collect())
}
