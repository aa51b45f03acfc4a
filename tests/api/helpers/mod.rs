//! Test harness: every test gets its own database (a fresh Postgres database
//! or SQLite file) and its own Redis key prefix, so tests run in parallel
//! against the real servers.

mod app;
mod backends;
mod command;
mod dump;
mod echo;
mod leftovers;
mod macros;
mod servers;

pub use app::{TEST_MASTER_PASSWORD, TEST_PBKDF2_ITERATIONS, TestApp};
pub use backends::{
    APP_LOGIN, CacheKind, DbKind, TestDb, db_options, fast_store, postgres_admin_url, redis_url, unique_prefix,
};
pub use command::latchkey;
pub use dump::{dump_cache, dump_database};
pub use echo::Upstream;
pub use leftovers::dated_name;
pub use servers::{PrivateCluster, PrivatePostgres, PrivateRedis};
