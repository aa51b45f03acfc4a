//! The sliding-window log, shared by both fast-path stores.
//!
//! Algorithm: every admitted request is logged with its timestamp (ms) and
//! cost; a request is admitted when the cost of the requests logged in the
//! last `window` plus its own cost is at most `limit`. This is exact: no
//! burst at a window boundary, because there is no boundary (N requests at
//! the end of one minute and N at the start of the next are N + N in the
//! 60 s that spans them, so the second N are refused).
//!
//! Memory per key: one log entry per admitted request still inside the
//! window, so at most `limit` entries (each about 40 bytes in Redis: a
//! sorted-set member `<id>:<cost>` and its score), plus one counter. Error
//! bound: none beyond clock resolution (1 ms). On Redis the clock is the
//! Redis server's (`TIME`), so replicas with skewed clocks still agree.

/// A limiter decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    pub allowed: bool,
    pub limit: u64,
    /// Cost units still available right after this decision.
    pub remaining: u64,
    /// Until the oldest logged request leaves the window (capacity returns).
    pub reset_ms: u64,
    /// When refused: until this request would be admitted; 0 when allowed.
    pub retry_after_ms: u64,
}

/// The in-process log of one key.
#[derive(Debug, Default)]
pub(crate) struct WindowLog {
    entries: std::collections::VecDeque<(u64, u64)>,
    used: u64,
    window_ms: u64,
}

impl WindowLog {
    pub(crate) fn is_idle(&self, now_ms: u64) -> bool {
        self.entries.back().is_none_or(|(t, _)| t + self.window_ms <= now_ms)
    }

    pub(crate) fn decide(&mut self, now_ms: u64, window_ms: u64, limit: u64, cost: u64) -> WindowDecision {
        self.window_ms = window_ms;
        while let Some(&(t, c)) = self.entries.front() {
            if t + window_ms > now_ms {
                break;
            }
            self.entries.pop_front();
            self.used = self.used.saturating_sub(c);
        }
        let mut retry_after_ms = 0;
        let allowed = self.used + cost <= limit;
        if allowed {
            self.entries.push_back((now_ms, cost));
            self.used += cost;
        } else {
            let need = self.used + cost - limit;
            let mut freed = 0;
            for &(t, c) in &self.entries {
                freed += c;
                if freed >= need {
                    retry_after_ms = (t + window_ms).saturating_sub(now_ms);
                    break;
                }
            }
        }
        let reset_ms = self.entries.front().map_or(0, |(t, _)| (t + window_ms).saturating_sub(now_ms));
        WindowDecision { allowed, limit, remaining: limit.saturating_sub(self.used), reset_ms, retry_after_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_burst_at_the_boundary() {
        let mut log = WindowLog::default();
        // 10 requests at the very end of a "minute"...
        for i in 0..10 {
            assert!(log.decide(59_000 + i, 60_000, 10, 1).allowed);
        }
        // ...and none at the start of the next: the window slides.
        let refused = log.decide(60_001, 60_000, 10, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 59_000 + 60_000 - 60_001);
        assert_eq!(refused.remaining, 0);
        // Once the first leaves the window, exactly one more fits.
        assert!(log.decide(119_000, 60_000, 10, 1).allowed);
        assert!(!log.decide(119_000, 60_000, 10, 1).allowed);
    }

    #[test]
    fn costs_and_retry_after() {
        let mut log = WindowLog::default();
        assert!(log.decide(0, 1_000, 10, 4).allowed);
        assert!(log.decide(100, 1_000, 10, 4).allowed);
        let d = log.decide(200, 1_000, 10, 4);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_ms, d.reset_ms), (2, 800, 800), "the first entry frees enough");
        let d = log.decide(200, 1_000, 10, 2);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let d = log.decide(200, 1_000, 10, 10);
        assert_eq!(d.retry_after_ms, 1_000, "everything must leave, the last at 200 + 1000");
    }
}
