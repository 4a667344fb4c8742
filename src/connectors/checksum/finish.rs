//! The canonical texts ferry finishes itself, where a server renders a raw
//! text (SQLite's dynamic values, floats and JSON across database kinds):
//! the same forms `sql::canonical` renders in SQL.
use serde_json::Value;

use crate::connectors::sql::canonical::Finish;

/// A dialect's raw text, finished to the canonical form.
pub fn finish_text(text: &str, how: Finish) -> Result<String, String> {
    match how {
        Finish::None => Ok(text.to_string()),
        Finish::Float => float(text),
        Finish::Number => match text.strip_prefix('r') {
            Some(real) => {
                let v: f64 = real
                    .parse()
                    .map_err(|_| format!("`{text}` is not a number"))?;
                Ok(decimal(&format!("{v}")))
            }
            None => Ok(decimal(text)),
        },
        Finish::Json => json(text),
        Finish::Date => Ok(text.get(..10).unwrap_or(text).to_string()),
        Finish::Time => Ok(time(text)),
        Finish::Timestamp => timestamp(text),
        Finish::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" => Ok("1".to_string()),
            "false" | "f" | "0" | "no" | "n" => Ok("0".to_string()),
            _ => Ok(text.to_string()),
        },
        Finish::Lower => Ok(text.to_lowercase()),
        Finish::Present => Ok("X".to_string()),
        Finish::Rtrim => Ok(text.trim_end_matches(' ').to_string()),
        Finish::Bytes => Ok(text
            .strip_prefix("\\x")
            .unwrap_or(text)
            .to_ascii_lowercase()),
    }
}

/// Plain digits without trailing fractional zeros (`1.50` → `1.5`).
fn decimal(text: &str) -> String {
    let text = text.trim();
    if !text.contains('.') || text.contains(['e', 'E']) {
        return text.to_string();
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "-0" | "" | "-" => "0".to_string(),
        t => t.to_string(),
    }
}

/// PostgreSQL's shortest text of a float: fixed for exponents -4..15,
/// otherwise `d.ddde+XX`.
fn float(text: &str) -> Result<String, String> {
    let v: f64 = match text {
        "inf" | "Infinity" => f64::INFINITY,
        "-inf" | "-Infinity" => f64::NEG_INFINITY,
        "nan" | "NaN" => return Ok("NaN".to_string()),
        t => t.parse().map_err(|_| format!("`{t}` is not a float"))?,
    };
    if v.is_infinite() {
        return Ok(if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string());
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..15).contains(&exp) {
        return Ok(format!("{v}"));
    }
    let sign = if exp < 0 { '-' } else { '+' };
    Ok(format!("{mantissa}e{sign}{:02}", exp.abs()))
}

/// Compact JSON with object keys sorted (as PostgreSQL's `jsonb` would
/// compare them, by length then bytes), numbers as written.
fn json(text: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = String::new();
    write_json(&value, &mut out);
    Ok(out)
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `HH:MM:SS[.ffffff]`, the fraction without trailing zeros.
fn time(text: &str) -> String {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits: String = fraction
        .chars()
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    match digits.trim_end_matches('0') {
        "" => whole.to_string(),
        digits => format!("{whole}.{digits}"),
    }
}

fn printed(t: chrono::NaiveDateTime) -> String {
    let micros = t.and_utc().timestamp_subsec_micros();
    let whole = t.format("%Y-%m-%d %H:%M:%S").to_string();
    match micros {
        0 => whole,
        m => format!("{whole}.{}", format!("{m:06}").trim_end_matches('0')),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, from ISO text with or without an
/// offset (`T` or a space between date and time).
fn timestamp(text: &str) -> Result<String, String> {
    let normal = text.replacen('T', " ", 1);
    let formats = ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"];
    for f in formats {
        if let Ok(t) = chrono::DateTime::parse_from_str(&normal, f) {
            return Ok(printed(t.naive_utc()));
        }
    }
    let zulu = normal.trim_end_matches('Z');
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(zulu, f) {
            return Ok(printed(t));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(zulu, "%Y-%m-%d") {
        return Ok(format!("{d} 00:00:00"));
    }
    Err(format!("`{text}` is not a timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishes_each_kind_to_one_text() {
        assert_eq!(finish_text("1.50", Finish::Number).unwrap(), "1.5");
        assert_eq!(finish_text("r1.5", Finish::Number).unwrap(), "1.5");
        assert_eq!(
            finish_text("r0.10000000000000001", Finish::Number).unwrap(),
            "0.1"
        );
        assert_eq!(finish_text("2.000", Finish::Number).unwrap(), "2");
        assert_eq!(finish_text("42", Finish::Number).unwrap(), "42");
        assert_eq!(
            finish_text("0.10000000000000001", Finish::Float).unwrap(),
            "0.1"
        );
        assert_eq!(finish_text("1e20", Finish::Float).unwrap(), "1e+20");
        assert_eq!(finish_text("1.5e-5", Finish::Float).unwrap(), "1.5e-05");
        assert_eq!(finish_text("123.25", Finish::Float).unwrap(), "123.25");
        assert_eq!(
            finish_text(r#"{"b": 1, "aa": [1, {"d":2,"c":3}]}"#, Finish::Json).unwrap(),
            r#"{"b":1,"aa":[1,{"c":3,"d":2}]}"#
        );
        assert_eq!(
            finish_text("2024-01-02T03:04:05+02:00", Finish::Timestamp).unwrap(),
            "2024-01-02 01:04:05"
        );
        assert_eq!(
            finish_text("2024-01-02 03:04:05.5", Finish::Timestamp).unwrap(),
            "2024-01-02 03:04:05.5"
        );
        assert_eq!(
            finish_text("10:00:01.25", Finish::Time).unwrap(),
            "10:00:01.25"
        );
        assert_eq!(finish_text("\\x0A0b", Finish::Bytes).unwrap(), "0a0b");
        assert_eq!(finish_text("True", Finish::Bool).unwrap(), "1");
        assert_eq!(finish_text("ab  ", Finish::Rtrim).unwrap(), "ab");
    }
}
