//! The SQL targets' statements: the rule plan's `SET` list, one statement
//! per batch (a JSON parameter), and the reads of images for conflict
//! detection.
use super::*;

/// `SET` assignments for an existing row, as (quoted column, new value):
/// the rule plan's update fields ([`WriteRules::update_fields`]) rendered
/// as SQL, and the soft-delete column cleared for an object that is back.
/// Every expression reads the row as it was before the statement.
pub fn assignments(
    rules: &WriteRules,
    cols: &[String],
    existing: &str,
    incoming: &str,
) -> Vec<(String, String)> {
    let newer = rules.updated_at.as_deref().map(|u| {
        let u = quote_ident(u);
        format!("({existing}.{u} IS NULL OR {incoming}.{u} > {existing}.{u})")
    });
    let mut sets: Vec<(String, String)> = rules
        .update_fields(cols)
        .into_iter()
        .map(|(c, condition)| {
            let q = quote_ident(c);
            let value = match (condition, &newer) {
                (Condition::IfNewer, Some(newer)) => {
                    format!("CASE WHEN {newer} THEN {incoming}.{q} ELSE {existing}.{q} END")
                }
                (Condition::Always | Condition::IfNewer, _) => format!("{incoming}.{q}"),
                (Condition::WhereEmpty, _) => format!("COALESCE({existing}.{q}, {incoming}.{q})"),
            };
            (q, value)
        })
        .collect();
    if let Some(sd) = rules.undelete() {
        sets.push((quote_ident(sd), "NULL".to_string()));
    }
    sets
}

pub(super) fn quoted_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn set_list(sets: &[(String, String)]) -> String {
    sets.iter()
        .map(|(column, value)| format!("{column} = {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL targets' dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Builds a SQL target's statements under the job's write rules. Every
/// statement takes a whole batch as one JSON array parameter (`$1`), so a
/// task of any size is one round trip per statement.
#[derive(Debug)]
pub struct WriteSql {
    /// Quoted, possibly schema-qualified.
    table: String,
    pub(super) rules: WriteRules,
    pub(super) dialect: Dialect,
    /// The target table's columns by name, read once before the first
    /// write: some types need their own expressions (below).
    columns: tokio::sync::OnceCell<HashMap<String, Column>>,
}

impl WriteSql {
    pub fn new(rules: WriteRules, dialect: Dialect) -> WriteSql {
        WriteSql {
            table: quote_qualified(&rules.table),
            rules,
            dialect,
            columns: tokio::sync::OnceCell::new(),
        }
    }

    /// Reads the table's columns with `schema` the first time it is called.
    pub async fn load_columns<F, Fut>(&self, schema: F) -> Result<(), ConnectorError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Shape, ConnectorError>>,
    {
        self.columns
            .get_or_try_init(|| async {
                Ok(match schema().await? {
                    Shape::Table(table) => table
                        .columns
                        .into_iter()
                        .map(|c| (c.name.clone(), c))
                        .collect(),
                    Shape::Missing | Shape::Schemaless => HashMap::new(),
                })
            })
            .await
            .map(|_| ())
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.get().and_then(|columns| columns.get(name))
    }

    /// A column's value in a comparison: PostgreSQL has no equality for
    /// `json`, `xml` or the geometric types, so those compare as jsonb or text.
    fn comparable(&self, column: &str, expr: &str) -> String {
        if self.dialect != Dialect::Postgres {
            return expr.to_string();
        }
        let declared = self.column(column).map(|c| c.declared.as_str());
        match declared {
            Some("json") => format!("({expr})::jsonb"),
            Some("xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle") => {
                format!("({expr})::text")
            }
            _ => expr.to_string(),
        }
    }

    pub fn rules(&self) -> &WriteRules {
        &self.rules
    }

    /// The statements for one batch, each with the JSON array it binds.
    /// Children replace their parent's set: the old rows go, the snapshot's
    /// rows come, in the parent's transaction.
    /// `with_images`: leave the upsert out, [`WriteSql::upsert_with_images`] runs it.
    pub(super) fn statements(
        &self,
        batch: &WriteBatch<'_>,
        upserts: Option<&Upserts>,
        with_images: bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(2);
        if let Some(upserts) = upserts {
            if !with_images {
                if let Some(sql) = self.upsert(&upserts.columns, &self.rows(&upserts.columns)) {
                    out.push((sql, upserts.json.clone()));
                }
            }
            for child in &self.rules.children {
                out.extend(self.replace_children(child, &batch.upserts));
            }
        }
        if !batch.deletes.is_empty() {
            if self.rules.delete_as() == DeleteAs::Remove {
                for child in &self.rules.children {
                    out.push(self.delete_children(child, &batch.deletes));
                }
            }
            if let Some(sql) = self.delete() {
                out.push((sql, to_json(&batch.deletes)));
            }
        }
        out
    }

    /// The parents' key values as a JSON array (one-column keys).
    fn parent_keys(&self, parents: &[&Record]) -> Vec<serde_json::Value> {
        let key = self
            .rules
            .key
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        parents
            .iter()
            .map(|p| p.get(key).cloned().unwrap_or_default())
            .collect()
    }

    fn delete_children(&self, child: &ChildTable, parents: &[&Record]) -> (String, String) {
        let membership = match self.dialect {
            Dialect::Postgres => "IN (SELECT json_array_elements_text($1::json))",
            Dialect::Sqlite => "IN (SELECT value FROM json_each($1))",
        };
        let cast = match self.dialect {
            Dialect::Postgres => "::text",
            Dialect::Sqlite => "",
        };
        (
            format!(
                "DELETE FROM {} WHERE {}{cast} {membership}",
                quote_qualified(&child.table),
                quote_ident(&child.parent)
            ),
            // A slice of JSON values always serialises.
            serde_json::to_string(&self.parent_keys(parents)).expect("keys serialise"),
        )
    }

    /// Deletes the parents' child rows and inserts the snapshot's, each with
    /// its parent column set to the parent's target key.
    fn replace_children(&self, child: &ChildTable, parents: &[&Record]) -> Vec<(String, String)> {
        let key = self
            .rules
            .key
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        let mut rows: Vec<Record> = Vec::new();
        for parent in parents {
            let parent_key = parent.get(key).cloned().unwrap_or_default();
            if let Some(serde_json::Value::Array(children)) = parent.get(&child.name) {
                for c in children {
                    if let serde_json::Value::Object(c) = c {
                        let mut c = c.clone();
                        c.insert(child.parent.clone(), parent_key.clone());
                        rows.push(c);
                    }
                }
            }
        }
        let mut out = vec![self.delete_children(child, parents)];
        if !rows.is_empty() {
            let refs: Vec<&Record> = rows.iter().collect();
            let cols = columns_of(&refs);
            let list = cols
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let table = quote_qualified(&child.table);
            out.push((
                format!(
                    "INSERT INTO {table} ({list}) SELECT {list} FROM {} AS x",
                    self.rows_of(&table, &cols)
                ),
                to_json(&refs),
            ));
        }
        out
    }

    /// The batch's rows as a subquery with columns `cols`, typed by the target.
    fn rows(&self, cols: &[String]) -> String {
        self.rows_of(&self.table, cols)
    }

    /// Rows bound at `$1` as a subquery with columns `cols`, typed by `table`.
    fn rows_of(&self, table: &str, cols: &[String]) -> String {
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        match self.dialect {
            Dialect::Postgres => {
                format!("(SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::json))")
            }
            Dialect::Sqlite => {
                let exprs = cols
                    .iter()
                    .map(|c| format!("{} AS {}", self.sqlite_value(c), quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("(SELECT {exprs} FROM json_each($1))")
            }
        }
    }

    /// Field `c` of a JSON row (`value`) as the SQLite value to store, by
    /// the column's type: numbers keep their exact digits in a text column
    /// (`json_extract` would make a 15-digit float of a wide decimal), and
    /// `\\x…` hex strings become the bytes in a BLOB column.
    fn sqlite_value(&self, c: &str) -> String {
        let path = format!("'$.\"{}\"'", c.replace('\'', "''").replace('"', "\\\""));
        let extract = format!("json_extract(value, {path})");
        match self.column(c).map(|c| &c.ty) {
            Some(ColumnType::Text(_) | ColumnType::Char(_)) => format!(
                "CASE WHEN json_type(value, {path}) IN ('integer', 'real') THEN value -> {path} ELSE {extract} END"
            ),
            Some(ColumnType::Bytes) => format!(
                "CASE WHEN substr({extract}, 1, 2) = '\\x' THEN unhex(substr({extract}, 3)) ELSE {extract} END"
            ),
            _ => extract,
        }
    }

    fn now(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }

    fn key_list(&self) -> String {
        self.rules
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every row's key as one JSON array (text), for [`key_stream`].
    pub fn keys(&self) -> String {
        let array = match self.dialect {
            Dialect::Postgres => "json_build_array",
            Dialect::Sqlite => "json_array",
        };
        format!(
            "SELECT CAST({array}({}) AS TEXT) FROM {}",
            self.key_list(),
            self.table
        )
    }

    /// Insert, update or upsert by `mode`; None when there is nothing to write.
    fn upsert(&self, cols: &[String], rows: &str) -> Option<String> {
        let t = &self.table;
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
        Some(match self.rules.mode {
            Mode::Update => {
                let sets = assignments(&self.rules, cols, "ferry_t", "x");
                if sets.is_empty() {
                    return None;
                }
                let on = self.rules.key.iter().map(|k| format!("ferry_t.{q} = x.{q}", q = quote_ident(k))).collect::<Vec<_>>().join(" AND ");
                format!("UPDATE {t} AS ferry_t SET {} FROM {rows} AS x WHERE {on} AND ({})", set_list(&sets), self.changes(&sets))
            }
            Mode::Insert => format!("INSERT INTO {t} ({list}) SELECT {list} FROM {rows} AS x WHERE true ON CONFLICT DO NOTHING"),
            Mode::Upsert | Mode::Mirror => {
                let sets = assignments(&self.rules, cols, "ferry_t", "excluded");
                let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {} WHERE {}", set_list(&sets), self.changes(&sets)) };
                format!("INSERT INTO {t} AS ferry_t ({list}) SELECT {list} FROM {rows} AS x WHERE true ON CONFLICT ({}) DO {action}", self.key_list())
            }
        })
    }

    /// True for a row the assignments change: a write that would leave it as
    /// it is does not touch it, so no trigger fires and the reverse job of a
    /// bidirectional pair sees no change to send back.
    fn changes(&self, sets: &[(String, String)]) -> String {
        let distinct = match self.dialect {
            Dialect::Postgres => "IS DISTINCT FROM",
            Dialect::Sqlite => "IS NOT",
        };
        sets.iter()
            .map(|(column, value)| {
                let name = unquote(column);
                format!(
                    "{} {distinct} {}",
                    self.comparable(&name, &format!("ferry_t.{column}")),
                    self.comparable(&name, value)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// The rows of the batch's keys as they are now, whole: as a source of
    /// the table reads them (PostgreSQL: each as `row_to_json` text).
    /// `lock`: PostgreSQL locks the rows until the write commits, so that
    /// no other writer changes them between this read and the write.
    pub fn read_back(&self, lock: bool) -> String {
        let keys = self.key_list();
        let select = match self.dialect {
            Dialect::Postgres => "CAST(row_to_json(ferry_t) AS TEXT)",
            Dialect::Sqlite => "ferry_t.*",
        };
        let lock = if lock && self.dialect == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        format!(
            "SELECT {select} FROM {} AS ferry_t WHERE ({keys}) IN (SELECT {keys} FROM {} AS x){lock}",
            self.table,
            self.rows(&self.rules.key)
        )
    }

    /// The non-key columns a batch's upserts write, without the soft-delete
    /// column (which only deletes set).
    pub fn upsert_columns(&self, batch: &WriteBatch<'_>) -> Vec<String> {
        let mut cols = batch.upsert_fields();
        cols.retain(|c| !self.rules.children.iter().any(|child| &child.name == c));
        if let Some(sd) = self.rules.undelete() {
            cols.retain(|c| c != sd);
        }
        cols
    }

    /// For each upsert in order: its `fields` as sent, typed by the target,
    /// and the target's row for its key (NULL when there is none), each as
    /// one JSON array (text). Run before and after the write, it gives
    /// [`Images`].
    pub fn images(&self, fields: &[String], before: bool) -> String {
        let t = &self.table;
        let all: Vec<String> = self.rules.key.iter().chain(fields).cloned().collect();
        let (rows, order) = match self.dialect {
            Dialect::Postgres => (
                format!("json_populate_recordset(NULL::{t}, $1::json) WITH ORDINALITY AS x"),
                "x.ordinality".to_string(),
            ),
            Dialect::Sqlite => {
                let rows = self.rows(&all);
                let rows = rows.replacen("SELECT ", "SELECT key AS ferry_ord, ", 1);
                (format!("{rows} AS x"), "x.ferry_ord".to_string())
            }
        };
        if !before {
            return format!(
                "SELECT {}, NULL FROM {rows} ORDER BY {order}",
                self.image_array("x", fields)
            );
        }
        format!(
            "SELECT {}, CASE WHEN ferry_t.{} IS NULL THEN NULL ELSE {} END FROM {rows} LEFT JOIN {t} AS ferry_t ON {} ORDER BY {order}",
            self.image_array("x", fields),
            quote_ident(&self.rules.key[0]),
            self.image_array("ferry_t", fields),
            self.key_join(),
        )
    }

    /// PostgreSQL: the images of rows just inserted (the target's own,
    /// which are what was sent, typed), read by key in the order of `$1`, a
    /// JSON array of objects holding each row's key.
    pub fn images_of_inserted(&self, fields: &[String]) -> String {
        let t = &self.table;
        format!(
            "SELECT {}, NULL FROM json_populate_recordset(NULL::{t}, $1::json) WITH ORDINALITY AS x \
             JOIN {t} AS ferry_t ON {} ORDER BY x.ordinality",
            self.image_array("ferry_t", fields),
            self.key_join(),
        )
    }

    /// PostgreSQL: the upsert and [`WriteSql::images`] (before the write) in
    /// one statement, so the batch's JSON is parsed once. Every part of a
    /// statement sees the rows as they were before it. None: there is no
    /// upsert to run (the images query alone gives the images).
    pub fn upsert_with_images(
        &self,
        cols: &[String],
        fields: &[String],
        before: bool,
    ) -> Option<String> {
        let t = &self.table;
        let upsert = self.upsert(cols, &format!("(SELECT {} FROM x)", quoted_list(cols)))?;
        if !before {
            return Some(format!(
                "WITH x AS MATERIALIZED (SELECT * FROM json_populate_recordset(NULL::{t}, $1::json) WITH ORDINALITY), \
                 ferry_write AS ({upsert}) \
                 SELECT {}, NULL FROM x ORDER BY x.ordinality",
                self.image_array("x", fields),
            ));
        }
        Some(format!(
            "WITH x AS MATERIALIZED (SELECT * FROM json_populate_recordset(NULL::{t}, $1::json) WITH ORDINALITY), \
             ferry_before AS (SELECT x.ordinality AS ferry_ord, {} AS ferry_image FROM x JOIN {t} AS ferry_t ON {}), \
             ferry_write AS ({upsert}) \
             SELECT {}, ferry_before.ferry_image FROM x LEFT JOIN ferry_before ON ferry_before.ferry_ord = x.ordinality ORDER BY x.ordinality",
            self.image_array("ferry_t", fields),
            self.key_join(),
            self.image_array("x", fields),
        ))
    }

    /// `fields` of the row `alias` as one JSON array (text). SQLite's JSON
    /// takes no BLOB: bytes are compared as their `\\x…` hex.
    fn image_array(&self, alias: &str, fields: &[String]) -> String {
        let values = fields
            .iter()
            .map(|c| {
                let value = format!("{alias}.{}", quote_ident(c));
                let bytes = matches!(
                    self.column(c).map(|c| &c.ty),
                    Some(ColumnType::Bytes | ColumnType::Any)
                );
                match (self.dialect, bytes) {
                    (Dialect::Sqlite, true) => format!(
                        "CASE WHEN typeof({value}) = 'blob' THEN '\\x' || lower(hex({value})) ELSE {value} END"
                    ),
                    _ => value,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        match self.dialect {
            Dialect::Postgres => format!("CAST(json_build_array({values}) AS TEXT)"),
            Dialect::Sqlite => format!("json_array({values})"),
        }
    }

    /// The target row `ferry_t` of the incoming row `x`.
    fn key_join(&self) -> String {
        self.rules
            .key
            .iter()
            .map(|k| format!("ferry_t.{q} = x.{q}", q = quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn delete(&self) -> Option<String> {
        let t = &self.table;
        let keys = self.key_list();
        let matching = format!(
            "({keys}) IN (SELECT {keys} FROM {} AS x)",
            self.rows(&self.rules.key)
        );
        match self.rules.delete_as() {
            DeleteAs::Keep => None,
            DeleteAs::Remove => Some(format!("DELETE FROM {t} WHERE {matching}")),
            DeleteAs::MarkDeleted(sd) => {
                let sd = quote_ident(sd);
                Some(format!(
                    "UPDATE {t} SET {sd} = {} WHERE {matching} AND {sd} IS NULL",
                    self.now()
                ))
            }
        }
    }
}

/// A batch's upserts as its statements bind them: the columns they write
/// and the rows as one JSON array.
pub(super) struct Upserts {
    pub(super) columns: Vec<String>,
    pub(super) json: String,
}
