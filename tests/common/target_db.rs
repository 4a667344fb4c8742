//! A target of either SQL kind, set up and read back by the tests.
use sqlx::sqlite::SqlitePoolOptions;

use super::{ConfigDir, MysqlDb, TestDb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Postgres,
    Sqlite,
    Mysql,
}

pub const BOTH: [Target; 2] = [Target::Postgres, Target::Sqlite];
pub const ALL_SQL: [Target; 3] = [Target::Postgres, Target::Sqlite, Target::Mysql];

impl Target {
    pub fn kind(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Sqlite => "sqlite",
            Target::Mysql => "mysql",
        }
    }
}

/// The target's URL: the test database, or an SQLite file in the config
/// folder. (A MariaDB target has a database of its own: [`TargetDb::url`].)
pub fn target_url(target: Target, cfg: &ConfigDir, db: &TestDb) -> String {
    match target {
        Target::Postgres => db.url.clone(),
        Target::Sqlite => format!("sqlite://{}?mode=rwc", cfg.path().join("crm.db").display()),
        Target::Mysql => panic!("a MariaDB target's URL comes from TargetDb::url"),
    }
}

/// A target database of any SQL kind, for tests that set it up and read it back.
pub enum TargetDb<'a> {
    Postgres(&'a TestDb),
    Sqlite(sqlx::SqlitePool, String),
    Mysql(MysqlDb),
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
                url.to_string(),
            ),
            Target::Mysql => TargetDb::Mysql(MysqlDb::new().await),
        }
    }

    /// A target of `target`'s kind: the test database, an SQLite file in
    /// `cfg`, or a new MariaDB database.
    pub async fn new(target: Target, cfg: &ConfigDir, db: &'a TestDb) -> TargetDb<'a> {
        match target {
            Target::Mysql => TargetDb::Mysql(MysqlDb::new().await),
            _ => TargetDb::open(target, &target_url(target, cfg, db), db).await,
        }
    }

    pub fn url(&self) -> String {
        match self {
            TargetDb::Postgres(db) => db.url.clone(),
            TargetDb::Sqlite(_, url) => url.clone(),
            TargetDb::Mysql(db) => db.url.clone(),
        }
    }

    pub async fn exec(&self, sql: &str) {
        match self {
            TargetDb::Postgres(db) => db.exec(sql).await,
            TargetDb::Sqlite(pool, _) => {
                sqlx::raw_sql(sql).execute(pool).await.expect("sqlite ddl");
            }
            TargetDb::Mysql(db) => db.exec(sql).await,
        }
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            TargetDb::Postgres(db) => db.strings(sql).await,
            TargetDb::Sqlite(pool, _) => {
                sqlx::query_scalar(sql).fetch_all(pool).await.expect("read")
            }
            TargetDb::Mysql(db) => db.strings(sql).await,
        }
    }
}

/// Two jobs from PostgreSQL tables `customers` and `orders` (cursor on
/// `updated_at`) into `crm_customers`, whose key the target generates, and
/// `crm_orders`, whose `customer_id` is translated through the customers'
/// id map.
pub fn id_map_jobs(cfg: &ConfigDir, kind: Target, src: &str, url: &str) {
    let source = |table: &str| {
        format!(
            "[source]\ntype = \"postgres\"\nurl = \"{src}\"\ntable = \"{table}\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"cursor\"\ncursor = \"updated_at\"\n\n\
             [batch]\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\n"
        )
    };
    let kind = kind.kind();
    cfg.job(
        "customers",
        &format!(
            "{}\n[target]\ntype = \"{kind}\"\nurl = \"{url}\"\ntable = \"crm_customers\"\nkey = [\"id\"]\n\n\
             [fields]\nname = \"name\"\n\n[rules]\nowner = \"source\"\n",
            source("customers")
        ),
    );
    cfg.job(
        "orders",
        &format!(
            "after = [\"customers\"]\n\n{}\n[target]\ntype = \"{kind}\"\nurl = \"{url}\"\ntable = \"crm_orders\"\nkey = [\"id\"]\n\n\
             [fields]\nid = \"id\"\ncustomer_id = {{ from = \"customer_id\", lookup = \"customers\" }}\ntotal = \"total\"\n\n\
             [rules]\nowner = \"source\"\n",
            source("orders")
        ),
    );
}

/// Customers and their orders in `db` (source ids far from the ones the
/// target generates, so a reference left untranslated points at nothing),
/// the target's tables (`crm_customers` generating its key), and the two
/// [`id_map_jobs`]. The target.
pub async fn id_map_fixture<'a>(kind: Target, cfg: &ConfigDir, db: &'a TestDb) -> TargetDb<'a> {
    db.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         INSERT INTO customers (id, name) VALUES (101, 'Ada'), (102, 'Brian'), (103, 'Cleo');
         INSERT INTO orders (id, customer_id, total) VALUES (1001, 101, '10'), (1002, 103, '20'), (1003, 102, '30'), (1004, NULL, '40');",
    )
    .await;
    let url = target_url(kind, cfg, db);
    let serial = match kind {
        Target::Postgres => "serial",
        Target::Sqlite => "INTEGER",
        Target::Mysql => unreachable!("the id map tests run on PostgreSQL and SQLite targets"),
    };
    let target = TargetDb::open(kind, &url, db).await;
    target
        .exec(&format!(
            "CREATE TABLE crm_customers (id {serial} PRIMARY KEY, name text);
             CREATE TABLE crm_orders (id bigint PRIMARY KEY, customer_id bigint, total text);"
        ))
        .await;
    id_map_jobs(cfg, kind, &db.url, &url);
    target
}
