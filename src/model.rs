//! The values that travel between stages: objects read from a source and the
//! queued items that carry them to a target.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One object's fields, in the source's column order.
pub type Record = Map<String, Value>;

/// An object read from a source, with its cursor value (when the job has a
/// cursor) in the connector's own lossless text form.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub data: Record,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// One change in a queue task. Its JSON form is the stable envelope that
/// message and HTTP targets send (the job name is added there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The source key values, in the order of `[source] key`.
    pub key: Vec<Value>,
    pub op: Op,
    /// Detection order of this change within its job; a larger one supersedes.
    pub version: i64,
    /// Content hash of `data` (xxh3, hex).
    pub hash: String,
    /// The object's fields (for a delete: empty).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Record,
    /// Why the last attempt to write it failed (failed and dead items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One change as a message, HTTP item or file line carries it: the stable
/// JSON envelope `{"job", "key", "op", "version", "hash", "data",
/// "children"}`. `data` holds the target fields (absent for a delete),
/// `children` each `[children.NAME]` set (absent when the job has none).
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub job: &'a str,
    pub key: &'a [Value],
    pub op: Op,
    pub version: i64,
    pub hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Record>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Record>,
}

impl<'a> Envelope<'a> {
    /// The envelope of `item` written as `record` (its target fields, with
    /// child sets under the names in `children`).
    pub fn new(job: &'a str, item: &'a Item, record: &Record, children: &[String]) -> Envelope<'a> {
        let (mut data, mut sets) = (Record::new(), Record::new());
        for (k, v) in record {
            if children.contains(k) {
                sets.insert(k.clone(), v.clone());
            } else {
                data.insert(k.clone(), v.clone());
            }
        }
        Envelope {
            job,
            key: &item.key,
            op: item.op,
            version: item.version,
            hash: &item.hash,
            data: (item.op == Op::Upsert).then_some(data),
            children: (!sets.is_empty()).then_some(sets),
        }
    }
}

/// The key values of `record` for the key columns, or the name of the first
/// key column it lacks.
pub fn key_of(record: &Record, key_columns: &[String]) -> Result<Vec<Value>, String> {
    key_columns
        .iter()
        .map(|c| match record.get(c) {
            Some(Value::Null) | None => Err(c.clone()),
            Some(v) => Ok(v.clone()),
        })
        .collect()
}

/// The ledger's text form of a key: compact JSON of the key values.
pub fn key_text(key: &[Value]) -> String {
    // Serialising a Vec<Value> cannot fail: every Value is representable.
    serde_json::to_string(key).expect("key values serialise")
}

/// Content hash of an object: xxh3 over its compact JSON.
pub fn content_hash(record: &Record) -> i64 {
    record_json_hash(record, &mut Vec::with_capacity(256))
}

/// Writes an object's compact JSON into `buf` (cleared first) and returns its
/// content hash, for callers that keep the JSON too.
pub fn record_json_hash(record: &Record, buf: &mut Vec<u8>) -> i64 {
    buf.clear();
    // Writing JSON into a Vec cannot fail.
    serde_json::to_writer(&mut *buf, record).expect("record serialises");
    xxhash_rust::xxh3::xxh3_64(buf) as i64
}

pub fn hash_hex(hash: i64) -> String {
    format!("{:016x}", hash as u64)
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The inverse of [`hash_hex`]; an unreadable hash reads as 0, which matches nothing.
pub fn parse_hash(hex: &str) -> i64 {
    u64::from_str_radix(hex, 16).map(|h| h as i64).unwrap_or(0)
}

/// A short rendering of an object for messages (never a whole large row).
pub fn preview(record: &Record) -> String {
    let mut s = serde_json::to_string(record).unwrap_or_default();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
