//! The part of a source that `ferry resync` re-reads: rows matching the
//! operator's SQL predicate and/or keys in a range. SQL sources push both
//! into their query (values bound, never spliced); sources read whole
//! filter keys as they read.
use std::cmp::Ordering;

use futures::StreamExt;
use serde_json::Value;

use super::{ConnectorError, RowStream};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// SQL over the source's columns, as the job's own `where`.
    pub predicate: Option<String>,
    pub keys: Option<KeyRange>,
    /// One chunk of a snapshot: the keys after one boundary up to the
    /// next, in the source's own key order (see [`Source::split`]).
    ///
    /// [`Source::split`]: super::Source::split
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Chunk>,
    /// These keys only, each in the source's key order (`ferry verify
    /// --repair`: the keys that differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<Vec<Vec<Value>>>,
}

/// Keys above `after` (excluded) up to `upto` (included), either end open:
/// chunks split at the same boundaries meet without a gap or an overlap.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub after: Option<Vec<Value>>,
    pub upto: Option<Vec<Value>>,
}

/// Keys from `from` to `to`, both included, either end open. A composite
/// key compares column by column, as SQL compares row values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRange {
    pub from: Option<Vec<Value>>,
    pub to: Option<Vec<Value>>,
}

impl KeyRange {
    /// Parses `LO..HI`, `LO..` or `..HI` for a key of `width` columns. A
    /// bound is a number or text for a one-column key (text with `..` in it
    /// is written as a JSON string), a JSON array for a composite key.
    pub fn parse(text: &str, width: usize) -> Result<KeyRange, String> {
        let (from, rest) = bound(text, width)?;
        let Some(rest) = rest.strip_prefix("..") else {
            return Err(format!(
                "`{text}` is not a key range: write LO..HI, LO.. or ..HI"
            ));
        };
        let (to, rest) = bound(rest, width)?;
        if !rest.is_empty() {
            return Err(format!("`{text}`: unexpected `{rest}` after the range"));
        }
        if from.is_none() && to.is_none() {
            return Err(format!(
                "`{text}` bounds nothing: give LO, HI or both (or leave --keys out to resync everything)"
            ));
        }
        let range = KeyRange { from, to };
        if let (Some(lo), Some(hi)) = (&range.from, &range.to) {
            if compare(lo, hi) == Some(Ordering::Greater) {
                return Err(format!("`{text}`: the low bound is above the high bound"));
            }
        }
        Ok(range)
    }

    /// Whether `key` lies in the range; Err naming the value when a key
    /// value and a bound are of different kinds (a number against text),
    /// which no order can compare.
    pub fn contains(&self, key: &[Value]) -> Result<bool, String> {
        let side = |bound: &Vec<Value>| {
            compare(key, bound).ok_or_else(|| {
                format!(
                    "key {} and bound {} are of different kinds (number, text): write the bound as the key is, e.g. a number unquoted or text as \"…\"",
                    Value::from(key.to_vec()),
                    Value::from(bound.clone())
                )
            })
        };
        if let Some(lo) = &self.from {
            if side(lo)? == Ordering::Less {
                return Ok(false);
            }
        }
        if let Some(hi) = &self.to {
            if side(hi)? == Ordering::Greater {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The bounds of a one-column range whose bounds are integers (None
    /// for an open end); None for any other range.
    pub fn integer_bounds(&self) -> Option<(Option<i64>, Option<i64>)> {
        let end = |bound: &Option<Vec<Value>>| match bound.as_deref() {
            None => Some(None),
            Some([one]) => one.as_i64().map(Some),
            Some(_) => None,
        };
        Some((end(&self.from)?, end(&self.to)?))
    }
}

impl std::fmt::Display for Subset {
    /// As the command line gives it: `--keys 1..9 --where "…"`, or `whole`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = |b: &Option<Vec<Value>>| match b.as_deref() {
            None => String::new(),
            Some([one]) => one.to_string(),
            Some(many) => Value::from(many.to_vec()).to_string(),
        };
        let mut parts = Vec::new();
        if let Some(range) = &self.keys {
            parts.push(format!(
                "--keys {}..{}",
                bound(&range.from),
                bound(&range.to)
            ));
        }
        if let Some(predicate) = &self.predicate {
            parts.push(format!("--where {predicate:?}"));
        }
        if let Some(listed) = &self.listed {
            parts.push(format!("{} listed key(s)", listed.len()));
        }
        match parts.is_empty() {
            true => f.write_str("the whole source"),
            false => f.write_str(&parts.join(" ")),
        }
    }
}

impl Subset {
    /// The key range a source read whole filters by; a predicate is SQL,
    /// which such a source cannot evaluate.
    pub fn for_whole_read(&self, system: &str) -> Result<Option<KeyRange>, ConnectorError> {
        if self.listed.is_some() {
            return Err(ConnectorError::failed(
                system,
                "repair",
                "this source is read whole: it cannot be read by a list of keys",
            ));
        }
        if self.chunk.is_some() {
            return Err(ConnectorError::failed(
                system,
                "snapshot",
                "this source is read whole: it cannot be read in key-range chunks",
            ));
        }
        if self.predicate.is_some() {
            return Err(ConnectorError::failed(
                system,
                "--where",
                "this source is not SQL: resync it by --keys, or whole",
            ));
        }
        Ok(self.keys.clone())
    }

    /// ` WHERE …` over the source relation aliased `s` (empty for the
    /// whole source), and the values to bind in order. `placeholder(n,
    /// column)` renders the n-th (0-based) bound value compared with `column`.
    pub fn where_clause(
        &self,
        key: &[String],
        placeholder: &mut dyn FnMut(usize, &str) -> String,
    ) -> (String, Vec<Value>) {
        let mut parts = Vec::new();
        if let Some(predicate) = &self.predicate {
            parts.push(format!("({predicate})"));
        }
        let range = self.keys.as_ref().map(|r| [(&r.from, ">="), (&r.to, "<=")]);
        let chunk = self
            .chunk
            .as_ref()
            .map(|c| [(&c.after, ">"), (&c.upto, "<=")]);
        let bounds: Vec<(&Vec<Value>, &str)> = range
            .into_iter()
            .chain(chunk)
            .flatten()
            .filter_map(|(bound, op)| Some((bound.as_ref()?, op)))
            .collect();
        let columns: Vec<String> = key
            .iter()
            .map(|k| format!("s.{}", super::sql::quote_ident(k)))
            .collect();
        let columns = tuple(&columns);
        let mut n = 0;
        let mut values = Vec::new();
        // `(p1, p2)`: the next placeholders, one per key column.
        let mut next_tuple = || {
            let placeholders: Vec<String> = key
                .iter()
                .map(|k| {
                    n += 1;
                    placeholder(n - 1, k)
                })
                .collect();
            tuple(&placeholders)
        };
        if let Some(listed) = self.listed.as_ref().filter(|l| !l.is_empty()) {
            let mut tuples = Vec::with_capacity(listed.len());
            for key_values in listed {
                tuples.push(next_tuple());
                values.extend(key_values.iter().cloned());
            }
            parts.push(format!("{columns} IN ({})", tuples.join(", ")));
        } else if self.listed.is_some() {
            parts.push("1 = 0".to_string());
        }
        for (bound, op) in bounds {
            parts.push(format!("{columns} {op} {}", next_tuple()));
            values.extend(bound.iter().cloned());
        }
        let clause = match parts.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", parts.join(" AND ")),
        };
        (clause, values)
    }
}

/// `a` alone, or `(a, b)`: a row value compares column by column.
fn tuple(parts: &[String]) -> String {
    match parts {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

/// Keeps the rows of a source read whole whose key lies in `range`; a key
/// that cannot be compared with it ends the stream with an error naming
/// the object.
pub fn filter(
    rows: RowStream,
    range: Option<KeyRange>,
    key: Vec<String>,
    system: String,
) -> RowStream {
    let Some(range) = range else {
        return rows;
    };
    Box::pin(rows.filter_map(move |row| {
        let kept = row.and_then(|row| {
            let values = row.object.key(&key).map_err(|column| {
                ConnectorError::failed(
                    &system,
                    "resync",
                    format!(
                        "an object has no value in key column `{column}`: {}",
                        row.object.preview()
                    ),
                )
            })?;
            match range.contains(&values) {
                Ok(true) => Ok(Some(row)),
                Ok(false) => Ok(None),
                Err(why) => Err(ConnectorError::failed(&system, "--keys", why)),
            }
        });
        std::future::ready(kept.transpose())
    }))
}

/// One bound: a JSON value (array, quoted text, number) or bare text up to
/// `..`; None when empty. Returns what follows it.
fn bound(text: &str, width: usize) -> Result<(Option<Vec<Value>>, &str), String> {
    if text.is_empty() || text.starts_with("..") {
        return Ok((None, text));
    }
    let (value, rest) = if text.starts_with(['[', '"']) {
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => (value, &text[values.byte_offset()..]),
            _ => return Err(format!("`{text}` starts a JSON value that does not end")),
        }
    } else {
        // Bare: up to `..`; a number if it reads as one (to serde_json,
        // `2..9` is no number followed by `..`), else text.
        let end = text.find("..").unwrap_or(text.len());
        let bare = &text[..end];
        let value = match serde_json::from_str::<Value>(bare) {
            Ok(Value::Number(n)) => Value::Number(n),
            _ => Value::String(bare.to_string()),
        };
        (value, &text[end..])
    };
    let values = match value {
        Value::Array(values) => values,
        scalar => vec![scalar],
    };
    if values.len() != width {
        return Err(format!(
            "the key has {width} column(s), the bound `{}` gives {}: write a composite key's bound as a JSON array, e.g. [1,\"a\"]",
            text.strip_suffix(rest).unwrap_or(text),
            values.len()
        ));
    }
    if let Some(bad) = values
        .iter()
        .find(|v| !matches!(v, Value::String(_) | Value::Number(_)))
    {
        return Err(format!("a key bound is a number or text, not {bad}"));
    }
    Ok((Some(values), rest))
}

/// Column by column; None when two values are of different kinds.
fn compare(a: &[Value], b: &[Value]) -> Option<Ordering> {
    for (x, y) in a.iter().zip(b) {
        let order = match (x, y) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?)?,
            },
            (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
            _ => return None,
        };
        if order != Ordering::Equal {
            return Some(order);
        }
    }
    Some(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_numbers_text_open_ends_and_composites() {
        let r = KeyRange::parse("100..200", 1).unwrap();
        assert_eq!(r.from, Some(vec![json!(100)]));
        assert_eq!(r.to, Some(vec![json!(200)]));
        let r = KeyRange::parse("..b", 1).unwrap();
        assert_eq!((r.from, r.to), (None, Some(vec![json!("b")])));
        let r = KeyRange::parse("\"a..b\"..", 1).unwrap();
        assert_eq!((r.from, r.to), (Some(vec![json!("a..b")]), None));
        let r = KeyRange::parse("[1,\"a\"]..[1,\"m\"]", 2).unwrap();
        assert_eq!(r.to, Some(vec![json!(1), json!("m")]));
        assert_eq!(
            KeyRange::parse("a-17..a-42", 1).unwrap().from,
            Some(vec![json!("a-17")])
        );
        let r = KeyRange::parse("2..9", 1).unwrap();
        assert_eq!((r.from, r.to), (Some(vec![json!(2)]), Some(vec![json!(9)])));
        let r = KeyRange::parse("-5..-1.5", 1).unwrap();
        assert_eq!(
            (r.from, r.to),
            (Some(vec![json!(-5)]), Some(vec![json!(-1.5)]))
        );
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for (text, width, says) in [
            ("100", 1, "not a key range"),
            ("..", 1, "bounds nothing"),
            ("5..1", 1, "above the high bound"),
            ("1..5", 2, "2 column(s)"),
            ("[1,2]..[3]", 2, "gives 1"),
            ("[true]..", 1, "number or text"),
            ("[1..", 1, "does not end"),
        ] {
            let e = KeyRange::parse(text, width).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn contains_both_ends_and_compares_numbers_as_numbers() {
        let r = KeyRange::parse("9..10", 1).unwrap();
        assert!(r.contains(&[json!(9)]).unwrap());
        assert!(r.contains(&[json!(10)]).unwrap());
        assert!(!r.contains(&[json!(100)]).unwrap());
        assert!(r.contains(&[json!("9")]).is_err());
        let r = KeyRange::parse("[1,\"b\"]..[2,\"a\"]", 2).unwrap();
        assert!(r.contains(&[json!(1), json!("z")]).unwrap());
        assert!(!r.contains(&[json!(2), json!("b")]).unwrap());
    }

    #[test]
    fn renders_row_value_conditions_with_placeholders() {
        let subset = Subset {
            predicate: Some("region = 'eu'".into()),
            keys: Some(KeyRange::parse("[1,\"a\"]..", 2).unwrap()),
            chunk: Some(Chunk {
                after: None,
                upto: Some(vec![json!(7), json!("q")]),
            }),
            listed: None,
        };
        let key = vec!["id".to_string(), "code".to_string()];
        let (sql, values) = subset.where_clause(&key, &mut |n, c| format!("${}::{c}", n + 1));
        assert_eq!(
            sql,
            " WHERE (region = 'eu') AND (s.\"id\", s.\"code\") >= ($1::id, $2::code) AND (s.\"id\", s.\"code\") <= ($3::id, $4::code)"
        );
        let (all, none) = Subset::default().where_clause(&key, &mut |_, _| "?".into());
        assert!(all.is_empty() && none.is_empty());
        assert_eq!(values, vec![json!(1), json!("a"), json!(7), json!("q")]);
        let listed = Subset {
            listed: Some(vec![vec![json!(1), json!("a")], vec![json!(2), json!("b")]]),
            ..Subset::default()
        };
        let (sql, values) = listed.where_clause(&key, &mut |n, _| format!("${}", n + 1));
        assert_eq!(sql, " WHERE (s.\"id\", s.\"code\") IN (($1, $2), ($3, $4))");
        assert_eq!(values.len(), 4);
        let nothing = Subset {
            listed: Some(vec![]),
            ..Subset::default()
        };
        assert_eq!(
            nothing.where_clause(&key, &mut |_, _| "?".into()).0,
            " WHERE 1 = 0"
        );
    }
}
