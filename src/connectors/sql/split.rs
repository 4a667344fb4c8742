//! How a SQL table source splits itself into a snapshot's chunks: the
//! server numbers the rows in its own key order and returns every n-th key.
use super::quote_ident;
use crate::connectors::{ConnectorError, Split};

/// The statements that split a SQL source's rows `FROM (relation) AS
/// s{tail}` into chunks of `rows` in the server's own key order: one
/// yields the last key of every `rows`-th row, as JSON array text made by
/// `json_array` (`{}`: the key's columns), the other counts the rows.
pub fn split_statements(
    relation: &str,
    tail: &str,
    key: &[String],
    rows: u64,
    json_array: &str,
) -> (String, String) {
    let inner: Vec<String> = key
        .iter()
        .map(|k| format!("s.{}", quote_ident(k)))
        .collect();
    let outer: Vec<String> = key
        .iter()
        .map(|k| format!("ferry_split.{}", quote_ident(k)))
        .collect();
    let order = inner.join(", ");
    let boundaries = format!(
        "SELECT {} FROM (SELECT {order}, row_number() OVER (ORDER BY {order}) AS ferry_n \
         FROM ({relation}) AS s{tail}) AS ferry_split WHERE ferry_split.ferry_n % {rows} = 0 \
         ORDER BY ferry_split.ferry_n",
        json_array.replace("{}", &outer.join(", ")),
        rows = rows.max(1),
    );
    let count = format!("SELECT count(*) FROM ({relation}) AS s{tail}");
    (boundaries, count)
}

/// The boundaries [`split_statements`] read, each a key's JSON array
/// text, and the part's row count: the chunks, in key order.
pub fn chunks_of(
    boundaries: &[String],
    count: i64,
    rows: u64,
    system: &str,
    object: &str,
) -> Result<Split, ConnectorError> {
    let mut keys = boundaries
        .iter()
        .map(|text| serde_json::from_str::<Vec<serde_json::Value>>(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConnectorError::failed(
                system,
                object,
                format!("a chunk boundary is unreadable: {e}"),
            )
        })?;
    // A last boundary on the last row would leave an empty chunk after it.
    if count > 0 && count as u64 % rows.max(1) == 0 {
        keys.pop();
    }
    Ok(Split::at(keys, count.max(0) as u64))
}
