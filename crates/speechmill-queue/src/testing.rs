//! Test support (feature `testing`): a PostgreSQL database that exists for one test.

use sqlx::Connection;

/// A uniquely named database on the PostgreSQL at 127.0.0.1:5432 (trust authentication, user
/// `postgres` or `root`), dropped when this value is dropped, even when the test fails.
#[derive(Debug)]
pub struct TempPostgres {
    /// A URL of the server's `postgres` database, for administration.
    admin_url: String,
    /// The database's name.
    name: String,
}

impl TempPostgres {
    /// Creates the database; panics if PostgreSQL is not reachable (a test that cannot reach it
    /// must fail, not pass).
    pub async fn create() -> TempPostgres {
        let mut admin_url = None;
        for user in ["postgres", "root"] {
            let url = format!("postgres://{user}@127.0.0.1:5432/postgres");
            if sqlx::PgConnection::connect(&url).await.is_ok() {
                admin_url = Some(url);
                break;
            }
        }
        let admin_url = admin_url.expect("PostgreSQL is not reachable on 127.0.0.1:5432 as postgres or root");
        let name = format!("speechmill_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to PostgreSQL");
        // The name is ours (a UUID), never input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        TempPostgres { admin_url, name }
    }

    /// The database's URL on 127.0.0.1:5432.
    pub fn url(&self) -> String {
        self.url_via(5432)
    }

    /// The database's URL through another port on 127.0.0.1 (a proxy in front of the server).
    pub fn url_via(&self, port: u16) -> String {
        let user = self.admin_url.trim_start_matches("postgres://").split('@').next().unwrap_or("postgres");
        format!("postgres://{user}@127.0.0.1:{port}/{}", self.name)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}
