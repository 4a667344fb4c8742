//! Running a SQL target's batch: its statements on one connection, the
//! rows' images before and after for the conflict check, and the stream of
//! a table's keys.
use super::*;

/// Runs a batch's statements on one connection (the caller's transaction),
/// reading the upserted rows before and after when the batch asks for images.
pub async fn execute_batch<DB>(
    conn: &mut DB::Connection,
    sql: &WriteSql,
    batch: &WriteBatch<'_>,
) -> Result<Written, sqlx::Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut written = Written::default();
    // Made once: every statement of the batch and its images read them.
    let upserts = (batch.upsert_count() > 0).then(|| Upserts {
        columns: sql.upsert_columns(batch),
        json: batch.upserts_json(),
    });
    let images = upserts.as_ref().filter(|_| batch.images).map(|upserts| {
        let fields: Vec<String> = upserts
            .columns
            .iter()
            .filter(|c| !sql.rules.key.contains(c))
            .cloned()
            .collect();
        (
            sql.images(&fields, !batch.skip_before),
            &upserts.json,
            fields,
        )
    });
    let mut before = Vec::new();
    let mut combined = false;
    if let (Some((query, rows, fields)), Some(upserts)) = (&images, &upserts) {
        let together = match sql.dialect {
            Dialect::Postgres => {
                sql.upsert_with_images(&upserts.columns, fields, !batch.skip_before)
            }
            // In-process: a second statement costs no round trip.
            Dialect::Sqlite => None,
        };
        combined = together.is_some();
        before = read_images::<DB>(conn, together.as_deref().unwrap_or(query), rows).await?;
    }
    for (statement, rows) in sql.statements(batch, upserts.as_ref(), combined) {
        sqlx::query::<DB>(&statement)
            .bind(rows)
            .execute(&mut *conn)
            .await?;
    }
    if let Some((query, rows, fields)) = images {
        // Only `newest` decides by what the row holds; for every other rule
        // the row after the write follows from the row before it.
        let after = match sql.rules.updated_at {
            Some(_) => Some(read_images::<DB>(conn, &query, rows).await?),
            None => None,
        };
        written.images = before
            .into_iter()
            .enumerate()
            .map(|(i, (incoming, before))| {
                let after = match &after {
                    Some(read) => read[i].1.clone(),
                    None => row_after(&sql.rules, &fields, &incoming, before.as_deref()),
                };
                Images {
                    incoming,
                    before,
                    after,
                }
            })
            .collect();
        written.fields = fields;
    }
    Ok(written)
}

/// The row's fields after an upsert, from the row before it, by the rule
/// plan's conditions evaluated on hashes (the change times are not among
/// them: a `newest` field counts as written).
pub(super) fn row_after(
    rules: &WriteRules,
    fields: &[String],
    incoming: &[u32],
    before: Option<&[u32]>,
) -> Option<Vec<u32>> {
    let Some(before) = before else {
        // No row: an upsert inserts the incoming values; an update writes nothing.
        return rules.inserts_new_rows().then(|| incoming.to_vec());
    };
    let null = xxhash_rust::xxh3::xxh3_64(b"null") as u32;
    Some(
        fields
            .iter()
            .enumerate()
            .map(|(i, f)| match rules.condition(f) {
                Some(c) if c.writes(before[i] == null, None) => incoming[i],
                _ => before[i],
            })
            .collect(),
    )
}

pub async fn read_images<DB>(
    conn: &mut DB::Connection,
    query: &str,
    rows: &str,
) -> Result<Vec<(Vec<u32>, Option<Vec<u32>>)>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let found: Vec<(String, Option<String>)> =
        sqlx::query_as::<DB, (String, Option<String>)>(query)
            .bind(rows.to_string())
            .fetch_all(&mut *conn)
            .await?;
    found
        .into_iter()
        .map(|(incoming, row)| {
            Ok((
                field_hashes(&incoming)?,
                row.as_deref().map(field_hashes).transpose()?,
            ))
        })
        .collect()
}

/// The hash of each element of a JSON array the target rendered.
pub(super) fn field_hashes(array: &str) -> Result<Vec<u32>, sqlx::Error> {
    let values: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(array).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(values
        .iter()
        .map(|v| xxhash_rust::xxh3::xxh3_64(v.get().as_bytes()) as u32)
        .collect())
}

/// Streams the rows of [`WriteSql::keys`] from a pool of either SQL target.
pub fn key_stream<DB>(
    pool: sqlx::Pool<DB>,
    sql: String,
    system: String,
    object: String,
) -> crate::connectors::KeyStream
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    Box::pin(async_stream::try_stream! {
        let mut rows = sqlx::query_scalar::<DB, String>(&sql).fetch(&pool);
        while let Some(text) = futures::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(|e| classify(e, &system, &object))?
        {
            let key: Vec<serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| ConnectorError::failed(&system, &object, e))?;
            yield key;
        }
    })
}
