//! New rows in bulk: a snapshot's first run writes its rows with
//! `COPY … FROM STDIN` instead of the upsert statement, when every column
//! it writes takes a value's text as `json_populate_recordset` would give
//! it (no json, array or unknown column types: those read a JSON value
//! differently from its text). A row already in the table makes the COPY
//! fail whole, and the batch is written by the statement instead.
use serde_json::Value;

use crate::connectors::{ColumnType, WriteBatch};
use crate::model::Record;

/// New rows as `COPY` takes them.
pub(super) struct CopyIn {
    /// `COPY table (columns) FROM STDIN`.
    pub statement: String,
    /// The rows, in COPY's text format.
    pub data: Vec<u8>,
    /// Each row's key fields as one JSON array of objects, in order.
    pub keys: String,
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
    let parsed: Vec<Record>;
    let rows: Vec<&Record> = if batch.upsert_json.is_empty() {
        batch.upserts.clone()
    } else {
        parsed = batch
            .upsert_json
            .iter()
            .map(|raw| serde_json::from_str(raw.get()))
            .collect::<Result<_, _>>()
            .ok()?;
        parsed.iter().collect()
    };
    let mut data = Vec::with_capacity(rows.len() * 64 * columns.len());
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        for (i, name) in columns.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            cell(&mut data, row.get(name));
        }
        data.push(b'\n');
        let key: Record = key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        keys.push(key);
    }
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| crate::connectors::sql::quote_ident(c))
        .collect();
    Some(CopyIn {
        statement: format!("COPY {table} ({}) FROM STDIN", quoted.join(", ")),
        data,
        keys: serde_json::to_string(&keys).ok()?,
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
    use serde_json::json;

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
