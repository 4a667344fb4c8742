//! Outbox tables (`id`, `op`, `payload`): read in id order, deleted once
//! their changes are enqueued.
use super::*;

/// An outbox table (`id`, `op`, `payload`) read by one run: rows in id
/// order after the last one received, deleted up to an acknowledged id (a
/// step that is safe to repeat).
pub struct OutboxTable {
    /// Quoted; None when the source is a query (validation requires a table).
    table: Option<String>,
    system: String,
    object: String,
    /// The SQL type rows are read as text in, and the dialect's placeholders.
    text_type: &'static str,
    params: [&'static str; 2],
    after: std::sync::Mutex<i64>,
}

impl OutboxTable {
    pub fn new(cfg: &crate::config::SourceConfig, system: &str, object: &str, mysql: bool) -> Self {
        OutboxTable {
            table: cfg.table.as_deref().map(quote_qualified),
            system: system.to_string(),
            object: object.to_string(),
            text_type: if mysql { "CHAR" } else { "TEXT" },
            params: if mysql { ["?", "?"] } else { ["$1", "$2"] },
            after: std::sync::Mutex::new(i64::MIN),
        }
    }

    fn table(&self) -> Result<&str, ConnectorError> {
        self.table.as_deref().ok_or_else(|| {
            ConnectorError::failed(
                &self.system,
                &self.object,
                "an outbox is read from a `table`",
            )
        })
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }

    /// Up to `max` rows after the last one received, as messages `{"op", "data"}`.
    pub async fn receive<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        max: usize,
    ) -> Result<Vec<crate::connectors::Received>, ConnectorError>
    where
        DB: sqlx::Database,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'r> (i64, Option<String>, Option<String>): sqlx::FromRow<'r, DB::Row>,
    {
        let [after_param, limit_param] = self.params;
        let sql = format!(
            "SELECT CAST(id AS {int}), CAST(op AS {text}), CAST(payload AS {text}) FROM {} WHERE id > {after_param} ORDER BY id LIMIT {limit_param}",
            self.table()?,
            int = if self.text_type == "CHAR" { "SIGNED" } else { "BIGINT" },
            text = self.text_type,
        );
        let after = *self.after.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as::<DB, _>(&sql)
            .bind(after)
            .bind(max as i64)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
        if let Some((last, _, _)) = rows.last() {
            *self.after.lock().unwrap_or_else(|p| p.into_inner()) = *last;
        }
        Ok(rows
            .into_iter()
            .map(|(id, op, payload)| crate::connectors::Received {
                body: outbox_message(op.as_deref(), payload.as_deref()),
                ack: id as u64,
            })
            .collect())
    }

    /// Deletes the rows up to `ack`.
    pub async fn acknowledge<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        ack: u64,
    ) -> Result<(), ConnectorError>
    where
        DB: sqlx::Database,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE id <= {}",
            self.table()?,
            self.params[0]
        );
        sqlx::query::<DB>(&sql)
            .bind(ack as i64)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// An outbox row as the message the outbox strategy reads: `{"op", "data"}`
/// (`op` NULL is an upsert). A payload that is not JSON makes the message
/// unreadable, and so dead with its text.
pub(super) fn outbox_message(op: Option<&str>, payload: Option<&str>) -> Vec<u8> {
    let op = serde_json::Value::String(op.unwrap_or("upsert").to_string());
    format!(r#"{{"op":{op},"data":{}}}"#, payload.unwrap_or("null")).into_bytes()
}
