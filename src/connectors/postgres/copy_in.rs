//! New rows in bulk: a snapshot's first run writes its rows with
//! `COPY … FROM STDIN` instead of the upsert statement, when every column
//! it writes takes a value's text as `json_populate_recordset` would give
//! it (no json, array or unknown column types: those read a JSON value
//! differently from its text). A row already in the table makes the COPY
//! fail whole, and the batch is written by the statement instead.
use serde_json::value::RawValue;
use serde_json::Value;

use crate::connectors::{ColumnType, WriteBatch};

/// New rows as `COPY` takes them.
pub(super) struct CopyIn {
    /// `COPY table (columns) FROM STDIN`.
    pub statement: String,
    /// The rows, in COPY's text format.
    pub data: Vec<u8>,
    /// Each row's key fields as one JSON array of objects, in order.
    pub keys: String,
    /// Each row's key, in order, when the key is one integer column.
    pub int_keys: Option<Vec<i64>>,
}

/// The batch's upserts (of `columns`, key first) as [`CopyIn`], or None
/// when a column's type reads JSON otherwise than text.
pub(super) fn render(
    table: &str,
    batch: &WriteBatch<'_>,
    columns: &[String],
    key: &[String],
    column: impl Fn(&str) -> Option<ColumnType>,
) -> Option<CopyIn> {
    if columns.is_empty() || !batch.deletes.is_empty() {
        return None;
    }
    for name in columns {
        match column(name)? {
            ColumnType::Json
            | ColumnType::Other(_)
            | ColumnType::Any
            | ColumnType::SqliteNumeric => return None,
            _ => {}
        }
    }
    let mut data = Vec::with_capacity(batch.upsert_count() * 64 * columns.len());
    let mut keys = String::with_capacity(batch.upsert_count() * 16 * key.len());
    keys.push('[');
    let key_at: Vec<usize> = key
        .iter()
        .map(|k| columns.iter().position(|c| c == k))
        .collect::<Option<_>>()?;
    let integer_key = key.len() == 1 && matches!(column(&key[0]), Some(ColumnType::Int(_)));
    let mut int_keys = integer_key.then(|| Vec::with_capacity(batch.upsert_count()));
    let mut row_keys = |values: &dyn Fn(usize) -> Option<String>| {
        if let Some(ints) = &mut int_keys {
            match values(key_at[0]).and_then(|v| v.parse().ok()) {
                Some(n) => ints.push(n),
                None => int_keys = None,
            }
        }
        if keys.len() > 1 {
            keys.push(',');
        }
        keys.push('{');
        for (n, (name, at)) in key.iter().zip(&key_at).enumerate() {
            if n > 0 {
                keys.push(',');
            }
            // A String serialises; a JSON value's text is JSON.
            keys.push_str(&serde_json::to_string(name).unwrap_or_default());
            keys.push(':');
            keys.push_str(values(*at).as_deref().unwrap_or("null"));
        }
        keys.push('}');
    };
    for row in &batch.upserts {
        for (i, name) in columns.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            cell(&mut data, row.get(name));
        }
        data.push(b'\n');
        row_keys(&|at| row.get(&columns[at]).map(Value::to_string));
    }
    for raw in &batch.upsert_json {
        let values = crate::model::object_fields(raw, columns)?;
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            raw_cell(&mut data, *value)?;
        }
        data.push(b'\n');
        row_keys(&|at| values[at].map(|v| v.get().to_string()));
    }
    keys.push(']');
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| crate::connectors::sql::quote_ident(c))
        .collect();
    Some(CopyIn {
        statement: format!("COPY {table} ({}) FROM STDIN", quoted.join(", ")),
        data,
        keys,
        int_keys,
    })
}

/// One value as COPY's text format writes it: `\N` for none, a boolean as
/// `true`/`false` (text columns then hold what the statement would write),
/// text with backslash, tab, newline and carriage return escaped.
fn cell(out: &mut Vec<u8>, value: Option<&Value>) {
    match value {
        None | Some(Value::Null) => out.extend_from_slice(b"\\N"),
        Some(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::Number(n)) => out.extend_from_slice(n.to_string().as_bytes()),
        Some(Value::String(s)) => escape(out, s),
        Some(other) => escape(out, &other.to_string()),
    }
}

/// [`cell`] of a value's JSON text, without building the value; None when
/// the text is not JSON.
fn raw_cell(out: &mut Vec<u8>, value: Option<&RawValue>) -> Option<()> {
    let Some(text) = value.map(RawValue::get) else {
        out.extend_from_slice(b"\\N");
        return Some(());
    };
    match text.as_bytes().first()? {
        b'n' => out.extend_from_slice(b"\\N"),
        b'"' if !text.contains('\\') => escape(out, &text[1..text.len() - 1]),
        b'"' => escape(out, &serde_json::from_str::<String>(text).ok()?),
        // Numbers and booleans as written; objects and arrays as compact
        // JSON, which ferry's own rows are.
        _ => escape(out, text),
    }
    Some(())
}

fn escape(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Record;
    use serde_json::json;

    #[test]
    fn renders_rows_kept_as_json_text_as_it_renders_maps() {
        let texts = [
            r#"{"name":"a\tb \u00e9\\","id":7,"ok":true,"doc":{"x":[1,2]}}"#,
            r#"{"id":8,"name":null,"id":9}"#,
        ];
        let raws: Vec<Box<RawValue>> = texts
            .iter()
            .map(|t| RawValue::from_string(t.to_string()).unwrap())
            .collect();
        let records: Vec<Record> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let columns = ["id", "name", "ok", "doc"].map(String::from);
        let key = ["id".to_string()];
        let text = |_: &str| Some(ColumnType::Text(None));
        let from_json = WriteBatch {
            upsert_json: raws.iter().map(|r| r.as_ref()).collect(),
            ..Default::default()
        };
        let from_maps = WriteBatch {
            upserts: records.iter().collect(),
            ..Default::default()
        };
        let a = render("t", &from_json, &columns, &key, text).unwrap();
        let b = render("t", &from_maps, &columns, &key, text).unwrap();
        assert_eq!(
            String::from_utf8(a.data.clone()).unwrap(),
            String::from_utf8(b.data).unwrap()
        );
        assert_eq!(
            String::from_utf8(a.data).unwrap(),
            "7\ta\\tb é\\\\\ttrue\t{\"x\":[1,2]}\n9\t\\N\t\\N\t\\N\n"
        );
        assert_eq!(a.keys, r#"[{"id":7},{"id":9}]"#);
        assert_eq!(a.keys, b.keys);
    }

    #[test]
    fn escapes_what_copy_text_reads_specially() {
        let mut out = Vec::new();
        for v in [json!("a\\b\tc\nd\re"), json!(null), json!(true), json!(1.5)] {
            cell(&mut out, Some(&v));
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\\b\\tc\\nd\\re|\\N|true|1.5|"
        );
    }

    #[test]
    fn leaves_json_and_unknown_columns_to_the_statement() {
        let record: Record = serde_json::from_value(json!({"id": 1, "doc": {"a": 1}})).unwrap();
        let batch = WriteBatch {
            upserts: vec![&record],
            ..Default::default()
        };
        let columns = ["id".to_string(), "doc".to_string()];
        let key = ["id".to_string()];
        let typed = |ty: ColumnType| {
            move |name: &str| match name {
                "id" => Some(ColumnType::Int(8)),
                _ => Some(ty.clone()),
            }
        };
        assert!(render("t", &batch, &columns, &key, typed(ColumnType::Json)).is_none());
        let array = ColumnType::Other("int4[]".into());
        assert!(render("t", &batch, &columns, &key, typed(array)).is_none());
        let copy = render(
            "\"t\"",
            &batch,
            &columns,
            &key,
            typed(ColumnType::Text(None)),
        )
        .unwrap();
        assert_eq!(copy.statement, "COPY \"t\" (\"id\", \"doc\") FROM STDIN");
        assert_eq!(String::from_utf8(copy.data).unwrap(), "1\t{\"a\":1}\n");
        assert_eq!(copy.keys, "[{\"id\":1}]");
    }
}
