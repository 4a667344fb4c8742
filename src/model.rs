//! The values that travel between stages: objects read from a source and the
//! queued items that carry them to a target.
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One object's fields, in the source's column order.
pub type Record = Map<String, Value>;

/// An object read from a source, with its cursor value (when the job has a
/// cursor) in the connector's own lossless text form.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub object: Object,
    pub cursor: Option<String>,
    /// The row's hash as its database computed it, in a hashed scan
    /// ([`crate::connectors::Source::scan_hashed`]).
    pub source_hash: Option<i64>,
}

impl SourceRow {
    pub fn new(data: Record, cursor: Option<String>) -> SourceRow {
        SourceRow {
            source_hash: None,
            object: Object::Record(data),
            cursor,
        }
    }
}

/// An object's fields as a source gives them.
#[derive(Debug, Clone)]
pub enum Object {
    Record(Record),
    /// The object as JSON that its database rendered, with its key values
    /// rendered alongside: hashed and queued as it is, without building a
    /// map of every field (most of detection's per-row cost before).
    Json {
        json: Box<RawValue>,
        key: Vec<Value>,
    },
}

impl Object {
    /// The key values for the key columns, or the name of the first key
    /// column without a value.
    pub fn key(&self, key_columns: &[String]) -> Result<Vec<Value>, String> {
        match self {
            Object::Record(record) => key_of(record, key_columns),
            Object::Json { key, .. } => match key.iter().position(Value::is_null) {
                Some(i) => Err(key_columns.get(i).cloned().unwrap_or_default()),
                None => Ok(key.clone()),
            },
        }
    }

    /// The object's compact JSON and its content hash, the same as
    /// [`content_hash`] of its record: JSON that is compact already (as
    /// PostgreSQL's `row_to_json` renders rows without json columns) is
    /// hashed as it is, other JSON is read and written compactly first.
    pub fn into_json(self) -> (Box<RawValue>, i64) {
        match self {
            Object::Json { json, .. } if is_compact(json.get()) => hashed(json),
            Object::Json { json, .. } => match serde_json::from_str::<Record>(json.get()) {
                Ok(record) => record_json(&record),
                // Not an object: no fields to write compactly; hashed as it is.
                Err(_) => hashed(json),
            },
            Object::Record(record) => record_json(&record),
        }
    }

    /// The object's fields (read from its JSON if need be; JSON that is not
    /// an object has none).
    pub fn record_mut(&mut self) -> &mut Record {
        if let Object::Json { json, .. } = self {
            *self = Object::Record(serde_json::from_str(json.get()).unwrap_or_default());
        }
        match self {
            Object::Record(record) => record,
            Object::Json { .. } => unreachable!("made a record just above"),
        }
    }

    /// A short rendering for messages.
    pub fn preview(&self) -> String {
        match self {
            Object::Record(record) => preview(record),
            Object::Json { json, .. } => shorten(json.get().to_string()),
        }
    }
}

/// A record's compact JSON and its content hash.
fn record_json(record: &Record) -> (Box<RawValue>, i64) {
    // Writing JSON into a String cannot fail: every Value is representable.
    hashed(serde_json::value::to_raw_value(record).expect("record serialises"))
}

/// `json` with its content hash: xxh3 of its bytes.
fn hashed(json: Box<RawValue>) -> (Box<RawValue>, i64) {
    let hash = xxhash_rust::xxh3::xxh3_64(json.get().as_bytes()) as i64;
    (json, hash)
}

/// Whether `json` is as serde_json writes it compactly: no whitespace
/// outside strings, and in strings no escape that it would write otherwise
/// (it writes `\u` only below U+0020, and never `\/`).
fn is_compact(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b' ' | b'\n' | b'\t' | b'\r') => return false,
            (_, b'"') => in_string = !in_string,
            (true, b'\\') => {
                match bytes.get(i + 1) {
                    Some(b'/') => return false,
                    Some(b'u') => {
                        let small = bytes.get(i + 2..i + 4) == Some(b"00")
                            && bytes.get(i + 4).is_some_and(|b| matches!(b, b'0' | b'1'))
                            && bytes
                                .get(i + 5)
                                .is_some_and(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
                        if !small {
                            return false;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    true
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
    /// The object's fields as compact JSON (None for a delete). It travels
    /// through the queue as text and is parsed only where a field is needed:
    /// a task's items would take ten times the memory as maps, and decoding
    /// them was the largest per-row cost of a sync (bench/NOTES.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Why the last attempt to write it failed (failed and dead items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What ferry last wrote for this key (the ledger's `written`; inner
    /// None: nothing), as detection read it when no other change of the key
    /// was queued: until this item settles, nothing else can change it, so
    /// sync's conflict check need not read the ledger again. Absent: sync
    /// reads it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub prior: Option<Option<String>>,
    /// The hash the source's database computed of this row (the diff's
    /// pushdown), recorded in the ledger beside `hash`. Never queued: the
    /// ledger learns it when the item is detected, or settled by a chunk.
    #[serde(skip)]
    pub source_hash: Option<i64>,
}

/// A field that is there, even as `null`: `Some` of its value.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl Item {
    /// An upsert of `record` under `key`, hashed as [`content_hash`] does
    /// (from the same compact JSON).
    pub fn upsert(key: Vec<Value>, record: &Record) -> Item {
        let (data, hash) = record_json(record);
        Item::upsert_json(key, data, hash)
    }

    /// An upsert of a source's object (see [`Object::into_json`]).
    pub fn upsert_object(key: Vec<Value>, object: Object) -> Item {
        let (data, hash) = object.into_json();
        Item::upsert_json(key, data, hash)
    }

    /// An upsert whose compact JSON and content hash are already made.
    pub fn upsert_json(key: Vec<Value>, data: Box<RawValue>, hash: i64) -> Item {
        Item {
            key,
            op: Op::Upsert,
            version: 0,
            hash: hash_hex(hash),
            data: Some(data),
            error: None,
            prior: None,
            source_hash: None,
        }
    }

    pub fn delete(key: Vec<Value>) -> Item {
        Item {
            key,
            op: Op::Delete,
            version: 0,
            hash: hash_hex(0),
            data: None,
            error: None,
            prior: None,
            source_hash: None,
        }
    }

    /// The object's fields (empty for a delete); an error when the queued
    /// JSON is not an object (a task payload edited by hand).
    pub fn record(&self) -> Result<Record, serde_json::Error> {
        match &self.data {
            Some(json) => serde_json::from_str(json.get()),
            None => Ok(Record::new()),
        }
    }
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

/// Adds the names of the JSON object `json`'s fields that `fields` lacks,
/// in their order, reading the values only to skip them. Anything but an
/// object adds nothing.
pub fn object_keys(json: &RawValue, fields: &mut Vec<String>) {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys<'f>(&'f mut Vec<String>);
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(name) = map.next_key::<FieldName<'de>>()? {
                if !self.0.iter().any(|f| *f == *name.0) {
                    self.0.push(name.0.into_owned());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(json.get());
    // A RawValue holds valid JSON; one that is not an object names no field.
    let _ = de.deserialize_map(Keys(fields));
}

/// The JSON object `json`'s values of `columns`, in their order, borrowed
/// from its text (None: the object lacks the field). None when `json` is
/// not an object. A later duplicate of a field wins, as in a map.
pub fn object_fields<'j>(
    json: &'j RawValue,
    columns: &[String],
) -> Option<Vec<Option<&'j RawValue>>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Fields<'c>(&'c [String]);
    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut values = vec![None; self.0.len()];
            while let Some(name) = map.next_key::<FieldName<'de>>()? {
                let value = map.next_value::<&'de RawValue>()?;
                if let Some(i) = self.0.iter().position(|c| *c == *name.0) {
                    values[i] = Some(value);
                }
            }
            Ok(values)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json.get());
    de.deserialize_map(Fields(columns)).ok()
}

/// A field name, borrowed from the JSON text unless it has escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(v.to_string().into()))
            }
        }
        d.deserialize_str(Name)
    }
}

/// The ledger's text form of a key: compact JSON of the key values.
pub fn key_text(key: &[Value]) -> String {
    // serde_json::to_string reserves 128 bytes: a diff's sort buffer holds
    // one key text per object, most of them a few bytes long.
    let mut text = Vec::with_capacity(16);
    // Serialising a Vec<Value> cannot fail: every Value is representable.
    serde_json::to_writer(&mut text, key).expect("key values serialise");
    // serde_json writes UTF-8 only.
    String::from_utf8(text).expect("JSON text is UTF-8")
}

/// Content hash of an object: xxh3 over its compact JSON.
pub fn content_hash(record: &Record) -> i64 {
    record_json(record).1
}

pub fn hash_hex(hash: i64) -> String {
    format!("{:016x}", hash as u64)
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A unix-millisecond time as `2026-12-05 07:08:27 UTC`, for people.
pub fn utc_text(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc.timestamp_millis_opt(ms).single().map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The inverse of [`hash_hex`]; an unreadable hash reads as 0, which matches nothing.
pub fn parse_hash(hex: &str) -> i64 {
    u64::from_str_radix(hex, 16).map(|h| h as i64).unwrap_or(0)
}

/// A short rendering of an object for messages (never a whole large row).
pub fn preview(record: &Record) -> String {
    shorten(serde_json::to_string(record).unwrap_or_default())
}

fn shorten(mut s: String) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_prior_keeps_absent_apart_from_nothing_written() {
        let mut item = Item::delete(vec![Value::from(1)]);
        let absent = serde_json::to_string(&item).expect("serialise");
        assert!(!absent.contains("prior"), "{absent}");
        for prior in [None, Some("0a1b".to_string())] {
            item.prior = Some(prior.clone());
            let text = serde_json::to_string(&item).expect("serialise");
            let back: Item = serde_json::from_str(&text).expect("deserialise");
            assert_eq!(back.prior, Some(prior), "{text}");
        }
        let back: Item = serde_json::from_str(&absent).expect("deserialise");
        assert_eq!(back.prior, None);
    }

    fn json_object(text: &str) -> Object {
        Object::Json {
            json: RawValue::from_string(text.to_string()).expect("test JSON is valid"),
            key: vec![Value::from(1)],
        }
    }

    #[test]
    fn a_rendered_object_hashes_and_queues_as_its_record_would() {
        for text in [
            r#"{"id":1,"name":"a \"b\" \\ c","balance":12.50,"at":"2026-01-01T00:00:00+00:00","n":null}"#,
            r#"{"id":1,"s":"tab\there\u001f and \n"}"#,
            r#"{"id":1,"doc":{"a": 1, "b": [1, 2]}}"#,
            r#"{"id":1,"s":"caf\u00e9"}"#,
            r#"{"id":1,"s":"a\/b"}"#,
            r#"{"id":1,"s":"\u001F"}"#,
        ] {
            let record: Record = serde_json::from_str(text).expect("test JSON is an object");
            let (json, hash) = json_object(text).into_json();
            assert_eq!(hash, content_hash(&record), "{text}");
            assert_eq!(
                json.get(),
                serde_json::to_string(&record).expect("serialises"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_rendered_key_with_no_value_names_its_column() {
        let object = Object::Json {
            json: RawValue::from_string("{}".to_string()).expect("valid"),
            key: vec![Value::from(1), Value::Null],
        };
        let columns = ["a".to_string(), "b".to_string()];
        assert_eq!(object.key(&columns), Err("b".to_string()));
        assert_eq!(
            json_object("{}").key(&columns[..1]),
            Ok(vec![Value::from(1)])
        );
    }
}
