//! Macros that run one test body on each backend.

/// Runs an async test body once per relational backend.
#[macro_export]
macro_rules! each_db {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::helpers::DbKind::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::DbKind::Sqlite).await
            }
        }
    };
}

/// Runs an async test body once per fast-path backend.
#[macro_export]
macro_rules! each_cache {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$body($crate::helpers::CacheKind::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$body($crate::helpers::CacheKind::Memory).await
            }
        }
    };
}

/// Runs an async test body on both deployments: Postgres + Redis, and the
/// embedded default (SQLite + in-process).
#[macro_export]
macro_rules! each_stack {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                super::$body($crate::helpers::DbKind::Postgres, $crate::helpers::CacheKind::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                super::$body($crate::helpers::DbKind::Sqlite, $crate::helpers::CacheKind::Memory).await
            }
        }
    };
}
