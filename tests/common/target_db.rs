//! A target of either SQL kind, set up and read back by the tests.
use sqlx::sqlite::SqlitePoolOptions;

use super::{ConfigDir, TestDb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Postgres,
    Sqlite,
}

pub const BOTH: [Target; 2] = [Target::Postgres, Target::Sqlite];

impl Target {
    pub fn kind(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Sqlite => "sqlite",
        }
    }
}

/// The target's URL: the test database, or an SQLite file in the config folder.
pub fn target_url(target: Target, cfg: &ConfigDir, db: &TestDb) -> String {
    match target {
        Target::Postgres => db.url.clone(),
        Target::Sqlite => format!("sqlite://{}?mode=rwc", cfg.path().join("crm.db").display()),
    }
}

/// A target database of either kind, for tests that set it up and read it back.
pub enum TargetDb<'a> {
    Postgres(&'a TestDb),
    Sqlite(sqlx::SqlitePool),
}

impl<'a> TargetDb<'a> {
    pub async fn open(target: Target, url: &str, db: &'a TestDb) -> TargetDb<'a> {
        match target {
            Target::Postgres => TargetDb::Postgres(db),
            Target::Sqlite => TargetDb::Sqlite(
                SqlitePoolOptions::new()
                    .connect(url)
                    .await
                    .expect("sqlite target"),
            ),
        }
    }

    pub async fn exec(&self, sql: &str) {
        match self {
            TargetDb::Postgres(db) => db.exec(sql).await,
            TargetDb::Sqlite(pool) => {
                sqlx::raw_sql(sql).execute(pool).await.expect("sqlite ddl");
            }
        }
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            TargetDb::Postgres(db) => db.strings(sql).await,
            TargetDb::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.expect("read"),
        }
    }
}
