//! A MariaDB database of its own per test, on the local server.
use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;

use super::on_own_runtime;

pub fn mysql_server() -> String {
    std::env::var("FERRY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

/// A MariaDB database of its own for one test, dropped when it ends.
pub struct MysqlDb {
    name: String,
    pub url: String,
    pub pool: MySqlPool,
}

impl MysqlDb {
    pub async fn new() -> MysqlDb {
        let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/test", mysql_server()))
            .await
            .expect("MariaDB must be running on 127.0.0.1:3306 (see .ci/run)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        let url = format!("{}/{name}", mysql_server());
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect");
        MysqlDb { name, url, pool }
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.pool).await.expect(sql);
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .expect(sql)
    }
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        on_own_runtime(async move {
            if let Ok(admin) = MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{}/test", mysql_server()))
                .await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&admin)
                    .await;
            }
        });
    }
}
