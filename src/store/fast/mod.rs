//! The fast-path store: short-lived and cached state (session cache, OPAQUE
//! login state, counters). Redis in production; an in-process map when no
//! Redis is configured. Both implement [`FastStore`] with the same semantics,
//! and the same test bodies run against both.
//!
//! Nothing here is the source of truth: losing all of it must cost at most
//! in-flight logins and a cache refill.

pub mod keys;
pub mod memory;
pub mod redis;
pub mod window;

use std::future::Future;
use std::time::Duration;

pub use keys::Keys;
pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use window::WindowDecision;

use super::StoreError;

pub type Result<T> = std::result::Result<T, StoreError>;

/// A lockout schedule at one instant, for [`FastStore::attempt`] (the
/// fast-store twin of `store::attempts::LockPlan`).
#[derive(Debug, Clone)]
pub struct AttemptPlan {
    pub now_ms: i64,
    pub threshold: u32,
    pub hard_limit: u32,
    /// Lock ends (ms) for the `threshold + i`-th failure; the last repeats.
    pub step_ends_ms: Vec<i64>,
    pub hard_end_ms: i64,
    /// Idle time after which a record is gone (the run starts again).
    pub ttl: Duration,
}

/// One rule of [`FastStore::sliding_windows`]: its log's key, limit and
/// window.
#[derive(Debug, Clone, Copy)]
pub struct WindowRule<'a> {
    pub key: &'a str,
    pub limit: u64,
    pub window: Duration,
}

/// What [`FastStore::attempt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Counted: the run's length, and the lock end (ms) in force after it
    /// (0: none).
    Counted { failures: u32, locked_until_ms: i64 },
    /// A lock was in force until this instant (ms): nothing counted.
    Locked { until_ms: i64 },
}

impl AttemptPlan {
    /// One attempt against the record (failures, lock end ms).
    pub fn apply(&self, failures: u32, locked_until_ms: i64) -> AttemptOutcome {
        if locked_until_ms > self.now_ms {
            return AttemptOutcome::Locked { until_ms: locked_until_ms };
        }
        let failures = failures.saturating_add(1);
        let locked_until_ms = if failures >= self.hard_limit {
            self.hard_end_ms
        } else if failures >= self.threshold && !self.step_ends_ms.is_empty() {
            let i = usize::try_from(failures - self.threshold).unwrap_or(usize::MAX).min(self.step_ends_ms.len() - 1);
            self.step_ends_ms[i]
        } else {
            0
        };
        AttemptOutcome::Counted { failures, locked_until_ms }
    }
}

/// Key/value operations with expiry, plus the atomic scripts the domain needs.
/// Every value has a TTL: nothing in the fast path lives forever.
pub trait FastStore: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Sets only if absent; `true` when this call set it.
    fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> impl Future<Output = Result<bool>> + Send;
    /// Reads and deletes in one step: of several concurrent callers, one gets
    /// the value.
    fn get_del(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Deletes; `true` when the key existed.
    fn del(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Adds `by` to an integer counter and returns the new value; a counter
    /// created by this call expires after `ttl`, an existing one keeps its
    /// expiry (a fixed window from the first increment).
    fn incr(&self, key: &str, by: i64, ttl: Duration) -> impl Future<Output = Result<i64>> + Send;
    /// Remaining time to live, `None` if the key does not exist.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Option<Duration>>> + Send;
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// One sliding-window decision (see [`window`]): admits `cost` units
    /// under `key` if at most `limit` are used in the last `window`.
    /// Atomic: concurrent callers never overshoot the limit together.
    fn sliding_window(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> impl Future<Output = Result<WindowDecision>> + Send;
    /// Several rules' decisions for one request in one step (one round
    /// trip): the rules are decided in order, and the first refusal ends
    /// it (the rules before it have admitted the request, exactly as
    /// separate [`sliding_window`](Self::sliding_window) calls would).
    /// Returns the decisions made, the refusal last.
    fn sliding_windows(
        &self,
        rules: &[WindowRule<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<Vec<WindowDecision>>> + Send;
    /// One failed attempt under `key` (see [`AttemptPlan::apply`]), atomic:
    /// concurrent attempts neither slip past a lock nor lose a count.
    fn attempt(&self, key: &str, plan: &AttemptPlan) -> impl Future<Output = Result<AttemptOutcome>> + Send;
}

/// The configured fast-path store. An enum rather than a trait object: the
/// hot paths (whoami, rate-limit checks) pay no boxing, and each arm is a
/// full [`FastStore`].
#[derive(Clone)]
pub enum Fast {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Fast {
    /// Name for readiness reports and logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Memory(_) => "memory",
        }
    }

    /// The in-process store, when that is what runs: it cannot fail, so it
    /// needs no fallback.
    pub fn as_local(&self) -> Option<&MemoryStore> {
        match self {
            Self::Redis(_) => None,
            Self::Memory(memory) => Some(memory),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Fast::Redis($store) => $call.await,
            Fast::Memory($store) => $call.await,
        }
    };
}

impl FastStore for Fast {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        delegate!(self, s => s.get(key))
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        delegate!(self, s => s.set(key, value, ttl))
    }
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        delegate!(self, s => s.set_nx(key, value, ttl))
    }
    async fn get_del(&self, key: &str) -> Result<Option<Vec<u8>>> {
        delegate!(self, s => s.get_del(key))
    }
    async fn del(&self, key: &str) -> Result<bool> {
        delegate!(self, s => s.del(key))
    }
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        delegate!(self, s => s.incr(key, by, ttl))
    }
    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        delegate!(self, s => s.ttl(key))
    }
    async fn ping(&self) -> Result<()> {
        delegate!(self, s => s.ping())
    }
    async fn sliding_window(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Result<WindowDecision> {
        delegate!(self, s => s.sliding_window(key, limit, window, cost))
    }
    async fn sliding_windows(&self, rules: &[WindowRule<'_>], cost: u64) -> Result<Vec<WindowDecision>> {
        delegate!(self, s => s.sliding_windows(rules, cost))
    }
    async fn attempt(&self, key: &str, plan: &AttemptPlan) -> Result<AttemptOutcome> {
        delegate!(self, s => s.attempt(key, plan))
    }
}
