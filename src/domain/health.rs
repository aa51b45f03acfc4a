//! Readiness: does each backend answer, within a bound.

use std::time::Duration;

use crate::store::db::Db;
use crate::store::{Fast, FastStore};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `postgres`, `sqlite`, `redis` or `memory`.
    pub backend: &'static str,
    pub ok: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub database: Check,
    pub cache: Check,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.ok && self.cache.ok
    }

    /// Names of the backends that did not answer.
    pub fn down(&self) -> Vec<&'static str> {
        [&self.database, &self.cache].into_iter().filter(|c| !c.ok).map(|c| c.backend).collect()
    }
}

/// Pings both stores concurrently.
pub async fn readiness(db: &Db, fast: &Fast) -> Readiness {
    let (db_ok, cache_ok) =
        tokio::join!(tokio::time::timeout(CHECK_TIMEOUT, db.ping()), tokio::time::timeout(CHECK_TIMEOUT, fast.ping()),);
    Readiness {
        database: Check { backend: db.backend_name(), ok: matches!(db_ok, Ok(Ok(()))) },
        cache: Check { backend: fast.backend_name(), ok: matches!(cache_ok, Ok(Ok(()))) },
    }
}
