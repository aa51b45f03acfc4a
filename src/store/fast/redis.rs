//! Redis fast-path store over a deadpool connection pool.
//!
//! Every command runs under a timeout: a Redis that hangs must turn into a
//! transient error the caller can fall back from, not a request that never
//! ends. Scripts are constants, loaded once per connection by `EVALSHA` with
//! the `NOSCRIPT` fallback that `redis::Script` performs.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::{AsyncCommands, Script};

use super::{FastStore, Result};
use crate::store::StoreError;

/// Adds to a counter; a counter without an expiry gets one.
/// KEYS[1]: the counter. ARGV[1]: increment (integer). ARGV[2]: TTL in ms.
/// Returns the new value.
const INCR_WITH_TTL: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
";

static INCR_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INCR_WITH_TTL));

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    timeout: Duration,
}

impl RedisStore {
    /// Builds the pool; connections are opened lazily, so this succeeds even
    /// while Redis is down (readiness reports it).
    pub fn connect(url: &str, pool_size: usize, timeout: Duration) -> Result<Self> {
        let mut config = Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts { wait: Some(timeout), create: Some(timeout), recycle: Some(timeout) },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Cache(format!("invalid Redis configuration: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { pool, timeout }) })
    }

    /// Runs `f` on a pooled connection under the command timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self.inner.pool.get().await?;
            f(conn).await.map_err(StoreError::from)
        };
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::CacheUnavailable(format!("no answer within {:?}", self.inner.timeout))),
        }
    }

    /// Every string key and value under `prefix` (tests inspect what is
    /// stored).
    pub async fn dump_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let pattern = format!("{prefix}:*");
        self.run(|mut conn| async move {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                for key in keys {
                    if let Some(value) = conn.get::<_, Option<Vec<u8>>>(&key).await? {
                        out.push((key, value));
                    }
                }
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        })
        .await
    }

    /// Deletes every key under `prefix` (tests use it to clean up after
    /// themselves). SCAN-based, so it never blocks the server.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let pattern = format!("{prefix}:*");
        self.run(|mut conn| async move {
            let mut deleted = 0u64;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                for key in keys {
                    let n: u64 = conn.del(&key).await?;
                    deleted += n;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        })
        .await
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    // Redis refuses a zero expiry; the shortest is one millisecond.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl FastStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.run(|mut c| async move {
            redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms(ttl)).query_async(&mut c).await
        })
        .await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let reply: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(value).arg("NX").arg("PX").arg(ttl_ms(ttl)).query_async(&mut c).await
            })
            .await?;
        Ok(reply.is_some())
    }

    async fn get_del(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.run(|mut c| async move { redis::cmd("GETDEL").arg(key).query_async(&mut c).await }).await
    }

    async fn del(&self, key: &str) -> Result<bool> {
        let n: u64 = self.run(|mut c| async move { c.del(key).await }).await?;
        Ok(n > 0)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.run(|mut c| async move { INCR_SCRIPT.key(key).arg(by).arg(ttl_ms(ttl)).invoke_async(&mut c).await }).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let ms: i64 = self.run(|mut c| async move { redis::cmd("PTTL").arg(key).query_async(&mut c).await }).await?;
        // -2: no such key; -1: no expiry (never written by latchkey).
        Ok(match ms {
            -2 => None,
            ms if ms < 0 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.unsigned_abs())),
        })
    }

    async fn ping(&self) -> Result<()> {
        let _: String = self.run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await }).await?;
        Ok(())
    }
}
