//! Database errors that every SQL client of ferry reads the same way: the
//! connectors' and the state store's.

/// Refusals only a change of configuration fixes: PostgreSQL's invalid
/// authorization (SQLSTATE class 28) and unknown database (3D000); MySQL's
/// and MariaDB's access denied (1044, 1045) and unknown database (1049).
pub fn refuses_access(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1044 | 1045 | 1049);
    }
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_none()
    {
        return false;
    }
    let code = db.code().unwrap_or_default();
    code.starts_with("28") || code == "3D000"
}

/// The same question of any sqlx error.
pub fn is_refusal(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if refuses_access(db.as_ref()))
}
