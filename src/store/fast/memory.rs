//! In-process fast-path store for the single-instance embedded mode.
//!
//! One mutex around a map: every operation is a few hundred nanoseconds, so
//! contention is not worth sharding for, and a single lock makes every
//! multi-step operation (GETDEL, counters) atomic exactly like a Lua script on
//! Redis. Expired entries are dropped when read and swept every
//! `SWEEP_EVERY` writes, so the map stays bounded by live keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::window::{WindowDecision, WindowLog};
use super::{AttemptOutcome, AttemptPlan, FastStore, Result, WindowRule};
use crate::store::StoreError;

const SWEEP_EVERY: u64 = 4096;

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    windows: HashMap<String, WindowLog>,
    writes: u64,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl Inner {
    /// The live entry under `key`, dropping it if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| e.expires_at <= now) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires_at: Instant, now: Instant) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.map.retain(|_, e| e.expires_at > now);
        }
        self.map.insert(key.to_owned(), Entry { value, expires_at });
    }

    /// Drops the logs of keys with nothing left in their window.
    fn sweep_windows(&mut self, now_ms: u64) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.windows.retain(|_, w| !w.is_idle(now_ms));
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation is a single map call), so a poisoned lock is safe
        // to keep using.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().map.values().filter(|e| e.expires_at > now).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live entry (tests inspect what is stored).
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let now = Instant::now();
        self.lock().map.iter().filter(|(_, e)| e.expires_at > now).map(|(k, e)| (k.clone(), e.value.clone())).collect()
    }

    /// Drops everything, like `FLUSHDB`.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.windows.clear();
    }
}

impl FastStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().live(key, Instant::now()).map(|e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let now = Instant::now();
        self.lock().insert(key, value.to_vec(), now + ttl, now);
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(key, now).is_some() {
            return Ok(false);
        }
        inner.insert(key, value.to_vec(), now + ttl, now);
        Ok(true)
    }

    async fn get_del(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let live = inner.live(key, now).is_some();
        Ok(if live { inner.map.remove(key).map(|e| e.value) } else { None })
    }

    async fn del(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let live = inner.live(key, now).is_some();
        inner.map.remove(key);
        Ok(live)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(entry) = inner.live(key, now) {
            let current: i64 = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Fast(format!("value at {key:?} is not an integer")))?;
            let next = current
                .checked_add(by)
                .ok_or_else(|| StoreError::Fast(format!("increment of {key:?} would overflow")))?;
            entry.value = next.to_string().into_bytes();
            return Ok(next);
        }
        inner.insert(key, by.to_string().into_bytes(), now + ttl, now);
        Ok(by)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let now = Instant::now();
        Ok(self.lock().live(key, now).map(|e| e.expires_at - now))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn attempt(&self, key: &str, plan: &AttemptPlan) -> Result<AttemptOutcome> {
        let now = Instant::now();
        let mut inner = self.lock();
        let (failures, until) = match inner.live(key, now).map(|e| e.value.as_slice()) {
            Some(&[a, b, c, d, ref rest @ ..]) if rest.len() == 8 => {
                let mut until = [0u8; 8];
                until.copy_from_slice(rest);
                (u32::from_be_bytes([a, b, c, d]), i64::from_be_bytes(until))
            }
            _ => (0, 0),
        };
        let outcome = plan.apply(failures, until);
        if let AttemptOutcome::Counted { failures, locked_until_ms } = outcome {
            let mut value = failures.to_be_bytes().to_vec();
            value.extend_from_slice(&locked_until_ms.to_be_bytes());
            inner.insert(key, value, now + plan.ttl, now);
        }
        Ok(outcome)
    }

    async fn sliding_window(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Result<WindowDecision> {
        let now_ms = now_millis();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut inner = self.lock();
        inner.sweep_windows(now_ms);
        Ok(inner.windows.entry(key.to_owned()).or_default().decide(now_ms, window_ms, limit, cost))
    }

    async fn sliding_windows(&self, rules: &[WindowRule<'_>], cost: u64) -> Result<Vec<WindowDecision>> {
        let now_ms = now_millis();
        let mut inner = self.lock();
        inner.sweep_windows(now_ms);
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let window_ms = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX).max(1);
            let decision =
                inner.windows.entry(rule.key.to_owned()).or_default().decide(now_ms, window_ms, rule.limit, cost);
            out.push(decision);
            if !decision.allowed {
                break;
            }
        }
        Ok(out)
    }
}

/// Wall-clock milliseconds (the limiter's time base, as Redis `TIME` is).
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
