//! Redis fast-path store over a deadpool connection pool.
//!
//! Every command runs under a timeout: a Redis that hangs must turn into a
//! transient error the caller can fall back from, not a request that never
//! ends. Scripts are constants, loaded once per connection by `EVALSHA` with
//! the `NOSCRIPT` fallback that `redis::Script` performs.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::{AsyncCommands, Script};

use super::window::WindowDecision;
use super::{AttemptOutcome, AttemptPlan, FastStore, Result, WindowRule};
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

/// One failed attempt against a lockout record (`AttemptPlan::apply`).
/// KEYS[1]: the record (hash: `n` failures, `until` lock end in ms).
/// ARGV[1]: now (ms). ARGV[2]: TTL (ms). ARGV[3]: threshold. ARGV[4]: hard
/// limit. ARGV[5]: hard lock end (ms). ARGV[6..]: lock ends (ms) for the
/// threshold-th failure onwards; the last repeats.
/// Returns {-1, until} when locked (nothing counted), else {n, until}.
const ATTEMPT: &str = r"
local v = redis.call('HMGET', KEYS[1], 'n', 'until')
local now = tonumber(ARGV[1])
local untl = tonumber(v[2]) or 0
if untl > now then return {-1, untl} end
local n = (tonumber(v[1]) or 0) + 1
local threshold, hard = tonumber(ARGV[3]), tonumber(ARGV[4])
local lock = 0
if n >= hard then
  lock = tonumber(ARGV[5])
elseif n >= threshold and #ARGV >= 6 then
  lock = tonumber(ARGV[6 + math.min(n - threshold, #ARGV - 6)])
end
redis.call('HSET', KEYS[1], 'n', n, 'until', lock)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {n, lock}
";

static ATTEMPT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ATTEMPT));

/// Sliding-window-log decisions (algorithm in `window.rs`) for one or more
/// rules, checked in order in one call: the first refusal ends the call
/// (the rules before it have logged the request, as separate calls would).
/// KEYS[2i-1]: rule i's log (sorted set: score = ms, member = `<id>` for a
/// cost of 1, `<id>:<cost>` otherwise). KEYS[2i]: the cost in that log
/// beyond one per entry (counter; absent while every entry costs 1). Both
/// keys of a rule share a hash tag.
/// ARGV[1]: cost. ARGV[2]: unique id. ARGV[2i+1]: rule i's window ms.
/// ARGV[2i+2]: its limit.
/// Returns {allowed (0/1), remaining, reset_ms, retry_after_ms} per rule
/// decided, flattened.
/// The clock is the server's (`TIME`), the same for every replica. With
/// unit costs a decision is TIME, GET, ZREMRANGEBYSCORE, ZCARD, ZADD, ZRANGE
/// and PEXPIRE; heavier costs add a scan of the expired entries.
pub const SLIDING_WINDOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local member = ARGV[2]
if cost ~= 1 then member = member .. ':' .. cost end
local out = {}
for i = 1, #KEYS / 2 do
  local log, xkey = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[2 * i + 1])
  local limit = tonumber(ARGV[2 * i + 2])
  local cutoff = now - window
  local stored = redis.call('GET', xkey)
  local extra = 0
  if stored then
    extra = tonumber(stored)
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)) do
      local c = string.match(m, ':(%d+)$')
      if c then extra = extra - tonumber(c) + 1 end
    end
    if extra < 0 then extra = 0 end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  local n = redis.call('ZCARD', log)
  local used = n + extra
  local allowed, retry, reset = 0, 0, 0
  if used + cost <= limit then
    redis.call('ZADD', log, now, member)
    extra = extra + cost - 1
    used = used + cost
    allowed = 1
    reset = window
    if n > 0 then
      reset = tonumber(redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')[2]) + window - now
    end
  elseif n > 0 then
    local need = used + cost - limit
    local entries
    if extra == 0 then
      entries = redis.call('ZRANGE', log, 0, need - 1, 'WITHSCORES')
    else
      entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    end
    reset = tonumber(entries[2]) + window - now
    local freed = 0
    for j = 1, #entries, 2 do
      freed = freed + (tonumber(string.match(entries[j], ':(%d+)$')) or 1)
      if freed >= need then
        retry = tonumber(entries[j + 1]) + window - now
        break
      end
    end
  end
  if n > 0 or allowed == 1 then
    redis.call('PEXPIRE', log, window)
  end
  if extra > 0 then
    redis.call('SET', xkey, extra, 'PX', window)
  elseif stored then
    redis.call('DEL', xkey)
  end
  out[#out + 1] = allowed
  out[#out + 1] = limit - used
  out[#out + 1] = reset
  out[#out + 1] = retry
  if allowed == 0 then break end
end
return out
";

static WINDOW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_WINDOW));

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    backend: Backend,
    timeout: Duration,
}

enum Backend {
    Single { client: Box<redis::Client>, pool: Pool },
    Cluster { pool: deadpool_redis::cluster::Pool },
}

/// The scheme that names a Redis Cluster: `redis+cluster://host1:port,host2:port`
/// (`rediss+cluster://` for TLS). Any node will do; the client discovers the rest.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")];

/// The node URLs of a cluster URL, or `None` for a single server's URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    CLUSTER_SCHEMES.iter().find_map(|(scheme, node_scheme)| {
        let rest = url.strip_prefix(scheme)?;
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((c, h)) => (format!("{c}@"), h),
            None => (String::new(), rest),
        };
        let (hosts, path) = match hosts.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (hosts, String::new()),
        };
        Some(
            hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}{credentials}{h}{path}"))
                .collect(),
        )
    })
}

static NEXT_STORE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// One multiplexed connection per store per thread. actix-web runs a
    /// single-threaded runtime per worker; a connection created on the
    /// worker's own thread has its I/O task there too, so a command never
    /// wakes another thread (the profile of whoami showed those cross-thread
    /// wake-ups as the largest cost).
    static LOCAL: std::cell::RefCell<std::collections::HashMap<u64, redis::aio::MultiplexedConnection>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A connection from either source.
pub enum Conn {
    Pooled(deadpool_redis::Connection),
    Local(redis::aio::MultiplexedConnection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Pooled(c) => c.req_packed_command(cmd),
            Self::Local(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Pooled(c) => c.req_packed_commands(cmd, offset, count),
            Self::Local(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(c) => c.get_db(),
            Self::Local(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// Builds the pool; connections are opened lazily, so this succeeds even
    /// while Redis is down (readiness reports it).
    pub fn connect(url: &str, pool_size: usize, timeout: Duration) -> Result<Self> {
        Self::connect_with_ca(url, pool_size, timeout, None)
    }

    /// With `ca_pem`, `rediss://` servers are verified against that
    /// certificate authority instead of the system's roots.
    pub fn connect_with_ca(url: &str, pool_size: usize, timeout: Duration, ca_pem: Option<&[u8]>) -> Result<Self> {
        let pool_config = PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts { wait: Some(timeout), create: Some(timeout), recycle: Some(timeout) },
            ..PoolConfig::default()
        };
        let invalid = |e: &dyn std::fmt::Display| StoreError::Fast(format!("invalid Redis configuration: {e}"));
        let backend = match cluster_nodes(url) {
            Some(nodes) => {
                let mut config = deadpool_redis::cluster::Config::from_urls(nodes);
                config.pool = Some(pool_config);
                Backend::Cluster { pool: config.create_pool(Some(Runtime::Tokio1)).map_err(|e| invalid(&e))? }
            }
            None => {
                let client = match ca_pem {
                    Some(ca) => redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) },
                    ),
                    None => redis::Client::open(url),
                }
                .map_err(|e| invalid(&e))?;
                // The pool connects with the same connection info (and so the
                // same TLS roots) as the client.
                let manager =
                    deadpool_redis::Manager::new(client.get_connection_info().clone()).map_err(|e| invalid(&e))?;
                let pool = Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| invalid(&e))?;
                Backend::Single { client: Box::new(client), pool }
            }
        };
        let id = NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { inner: Arc::new(Inner { id, backend, timeout }) })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
    }

    /// This thread's connection, made on first use (on a worker thread of
    /// actix) or a pooled one (elsewhere).
    /// The connection, and whether it is a kept thread-local one (which
    /// may have died with a Redis restart since its last use).
    async fn connection(&self) -> Result<(Conn, bool)> {
        let (client, pool) = match &self.inner.backend {
            Backend::Cluster { pool } => return Ok((Conn::Cluster(pool.get().await?), false)),
            Backend::Single { client, pool } => (client, pool),
        };
        let on_local_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !on_local_runtime {
            return Ok((Conn::Pooled(pool.get().await?), false));
        }
        if let Some(conn) = LOCAL.with(|l| l.borrow().get(&self.inner.id).cloned()) {
            return Ok((Conn::Local(conn), true));
        }
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(self.inner.timeout));
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        LOCAL.with(|l| l.borrow_mut().insert(self.inner.id, conn.clone()));
        Ok((Conn::Local(conn), false))
    }

    fn forget_local(&self) {
        let _ = LOCAL.try_with(|l| l.borrow_mut().remove(&self.inner.id));
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let (conn, kept) = self.connection().await?;
            let result = f(conn).await.map_err(StoreError::from);
            if !matches!(result, Err(ref e) if e.is_transient()) {
                return result;
            }
            // A broken connection is replaced. A kept one most likely died
            // with a Redis restart while idle: try once more on a new one.
            self.forget_local();
            if !kept {
                return result;
            }
            let (conn, _) = self.connection().await?;
            let retried = f(conn).await.map_err(StoreError::from);
            if matches!(retried, Err(ref e) if e.is_transient()) {
                self.forget_local();
            }
            retried
        };
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                self.forget_local();
                Err(StoreError::FastUnavailable(format!("no answer within {:?}", self.inner.timeout)))
            }
        }
    }

    /// Every key under `prefix`, by SCAN (never blocks the server).
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{prefix}:*");
        let pattern = pattern.as_str();
        self.run(|mut conn| async move {
            let (mut all, mut cursor) = (Vec::new(), 0u64);
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                all.extend(keys);
                if next == 0 {
                    return Ok(all);
                }
                cursor = next;
            }
        })
        .await
    }

    /// Every string and sorted-set value under `prefix` (tests inspect what
    /// is stored).
    pub async fn dump_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for key in self.keys_under(prefix).await? {
            let key_ref = key.as_str();
            let value = self
                .run(|mut conn| async move {
                    let kind: String = redis::cmd("TYPE").arg(key_ref).query_async(&mut conn).await?;
                    Ok(match kind.as_str() {
                        "string" => conn.get::<_, Option<Vec<u8>>>(key_ref).await?,
                        "zset" => Some(conn.zrange::<_, Vec<Vec<u8>>>(key_ref, 0, -1).await?.join(&b' ')),
                        _ => None,
                    })
                })
                .await?;
            if let Some(value) = value {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Deletes every key under `prefix` (tests clean up after themselves).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let mut deleted = 0;
        for key in self.keys_under(prefix).await? {
            let key = key.as_str();
            let n: u64 = self.run(|mut conn| async move { conn.del(key).await }).await?;
            deleted += n;
        }
        Ok(deleted)
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

    async fn attempt(&self, key: &str, plan: &AttemptPlan) -> Result<AttemptOutcome> {
        let (n, until): (i64, i64) = self
            .run(|mut c| async move {
                let mut call = ATTEMPT_SCRIPT.key(key);
                call.arg(plan.now_ms)
                    .arg(ttl_ms(plan.ttl))
                    .arg(plan.threshold)
                    .arg(plan.hard_limit)
                    .arg(plan.hard_end_ms);
                for end in &plan.step_ends_ms {
                    call.arg(*end);
                }
                call.invoke_async(&mut c).await
            })
            .await?;
        Ok(match u32::try_from(n) {
            Ok(failures) => AttemptOutcome::Counted { failures, locked_until_ms: until },
            Err(_) => AttemptOutcome::Locked { until_ms: until },
        })
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

    async fn sliding_window(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Result<WindowDecision> {
        let decisions = self.eval_windows(&[WindowRule { key, limit, window }], cost).await?;
        decisions.into_iter().next().ok_or_else(|| StoreError::Fast("the window script decided nothing".into()))
    }

    async fn sliding_windows(&self, rules: &[WindowRule<'_>], cost: u64) -> Result<Vec<WindowDecision>> {
        // A cluster refuses a script over keys of several slots: one call
        // per rule there (the same order, the same early stop).
        if self.is_cluster() && rules.len() > 1 {
            let mut out = Vec::with_capacity(rules.len());
            for rule in rules {
                let decision = self.eval_windows(std::slice::from_ref(rule), cost).await?;
                let allowed = decision.iter().all(|d| d.allowed);
                out.extend(decision);
                if !allowed {
                    break;
                }
            }
            return Ok(out);
        }
        self.eval_windows(rules, cost).await
    }
}

impl RedisStore {
    /// One call of the window script over `rules`.
    async fn eval_windows(&self, rules: &[WindowRule<'_>], cost: u64) -> Result<Vec<WindowDecision>> {
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let id: u64 = rand::random();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(WINDOW_SCRIPT.get_hash()).arg(rules.len() * 2);
        for rule in rules {
            cmd.arg(rule.key).arg(ExtraKey(rule.key));
        }
        cmd.arg(cost).arg(id);
        for rule in rules {
            cmd.arg(ttl_ms(rule.window)).arg(rule.limit);
        }
        let cmd = &cmd;
        let flat: Vec<i64> = self
            .run(|mut c| async move {
                match cmd.query_async(&mut c).await {
                    Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        WINDOW_SCRIPT.load_async(&mut c).await?;
                        cmd.query_async(&mut c).await
                    }
                    result => result,
                }
            })
            .await?;
        let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(flat
            .chunks_exact(4)
            .zip(rules)
            .map(|(d, rule)| WindowDecision {
                allowed: d[0] == 1,
                limit: rule.limit,
                remaining: non_negative(d[1]),
                reset_ms: non_negative(d[2]),
                retry_after_ms: non_negative(d[3]),
            })
            .collect())
    }
}

/// A log's cost counter, `<log>:x`, written straight into the command
/// (no intermediate string).
struct ExtraKey<'a>(&'a str);

impl redis::ToRedisArgs for ExtraKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        use std::io::Write as _;
        let _ = arg.write_all(self.0.as_bytes());
        let _ = arg.write_all(b":x");
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn cluster_urls() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000,b:7001"),
            Some(vec!["redis://a:7000".to_owned(), "redis://b:7001".to_owned()])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://user:pw@a:7000,b:7001"),
            Some(vec!["rediss://user:pw@a:7000".to_owned(), "rediss://user:pw@b:7001".to_owned()])
        );
    }
}
