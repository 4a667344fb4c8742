//! Declared column types of a CSV file (`[source] types`): a CSV cell is
//! text; a typed column's cells travel as the value a SQL source of that
//! type gives (`docs/types.md`), and `create = true` makes a typed column.
use serde_json::Value;

use crate::connectors::ColumnType;

/// What `types` accepts, for the error that names a type it does not.
pub const COLUMN_TYPES: &str = "boolean, smallint, integer, bigint, numeric(p,s), real, \
double precision, text, varchar(n), date, time, timestamp, timestamptz, uuid, json";

/// The type a declared name stands for (PostgreSQL's spelling); None for
/// a name ferry does not know.
pub fn column_type(declared: &str) -> Option<ColumnType> {
    match ColumnType::postgres(declared) {
        ColumnType::Other(_) => None,
        ty => Some(ty),
    }
}

/// A non-empty cell of a column of type `ty`, as that type's value; Err
/// says why the text is not one.
pub fn cell_value(ty: &ColumnType, cell: &str) -> Result<Value, String> {
    let not = |what: &str| Err(format!("`{cell}` is not {what}"));
    match ty {
        ColumnType::Int(_) => match cell.trim().parse::<i64>() {
            Ok(n) => Ok(Value::from(n)),
            Err(_) => not("an integer"),
        },
        // Every digit kept: the number's own text becomes the JSON number.
        ColumnType::Decimal(_) | ColumnType::Float(_) => {
            let text = cell.trim();
            match (
                text.parse::<f64>(),
                serde_json::from_str::<serde_json::Number>(text),
            ) {
                (Ok(_), Ok(n)) => Ok(Value::Number(n)),
                _ => not("a number"),
            }
        }
        ColumnType::Bool => match cell.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "f" | "0" | "no" => Ok(Value::Bool(false)),
            _ => not("a boolean (true or false)"),
        },
        ColumnType::Json => serde_json::from_str(cell).or_else(|_| not("JSON")),
        _ => Ok(Value::String(cell.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_cells_become_typed_values() {
        let int = column_type("bigint").unwrap();
        assert_eq!(cell_value(&int, "42").unwrap(), Value::from(42));
        assert!(cell_value(&int, "4x").unwrap_err().contains("`4x`"));
        let money = column_type("numeric(12,2)").unwrap();
        assert_eq!(
            cell_value(&money, "3055.40").unwrap().to_string(),
            "3055.40"
        );
        assert!(cell_value(&money, "1e").is_err());
        let flag = column_type("boolean").unwrap();
        assert_eq!(cell_value(&flag, "F").unwrap(), Value::Bool(false));
        assert!(column_type("money_bags").is_none());
    }
}
