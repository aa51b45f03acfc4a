//! Cleanup: deletes rows past their retention, in bounded batches, never
//! the audit log. Run by the background job (every `maintenance.interval`)
//! and by `latchkey maintenance run`; `now` is a parameter, so retention is
//! testable at any instant. Replicas may run it at once: every delete
//! repeats its condition and is by id, so the second run finds nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Result;
use super::core::Core;
use crate::store::cleanup as store;

/// How long dead rows are kept, and how many go per statement.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Revoked or expired sessions (with their refresh tokens), expired
    /// refresh tokens and spent or expired reset tokens, after their end.
    pub sessions: Duration,
    /// Devices without a session, after they were last seen (never blocked ones).
    pub devices: Duration,
    /// Rows per statement.
    pub batch: u64,
}

/// Rows deleted, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub reset_tokens: u64,
    pub devices: u64,
}

impl CleanupReport {
    /// (kind, count), as the metric labels and the CLI name them.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        [
            ("sessions", self.sessions),
            ("refresh_tokens", self.refresh_tokens),
            ("reset_tokens", self.reset_tokens),
            ("devices", self.devices),
        ]
    }
}

fn before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

impl Core {
    /// Deletes what is past its retention at `now`; loops over batches until
    /// a batch comes back short.
    #[tracing::instrument(skip_all)]
    pub async fn cleanup(&self, retention: &Retention, now: DateTime<Utc>) -> Result<CleanupReport> {
        let batch = retention.batch.max(1);
        let cutoff = before(now, retention.sessions);
        let idle_cutoff = before(cutoff, self.sessions.idle_timeout);
        let mut report = CleanupReport::default();

        loop {
            let (sessions, tokens, hashes) = store::delete_dead_sessions(&self.db, cutoff, idle_cutoff, batch).await?;
            // A dead session's cache entry expired with its token long ago,
            // unless an eviction failed or the retention is shorter than a
            // token's lifetime: forget it anyway, so nothing can serve it.
            for hash in &hashes {
                self.session_cache.remove(hash).await;
            }
            report.sessions += sessions;
            report.refresh_tokens += tokens;
            if sessions < batch {
                break;
            }
        }
        loop {
            let n = store::delete_expired_refresh_tokens(&self.db, cutoff, batch).await?;
            report.refresh_tokens += n;
            if n < batch {
                break;
            }
        }
        loop {
            let n = store::delete_spent_reset_tokens(&self.db, cutoff, batch).await?;
            report.reset_tokens += n;
            if n < batch {
                break;
            }
        }
        let device_cutoff = before(now, retention.devices);
        loop {
            let n = store::delete_stale_devices(&self.db, device_cutoff, batch).await?;
            report.devices += n;
            if n < batch {
                break;
            }
        }

        for (kind, n) in report.counts() {
            metrics::counter!("latchkey_cleanup_deleted_total", "kind" => kind).increment(n);
        }
        if report != CleanupReport::default() {
            tracing::info!(
                sessions = report.sessions,
                refresh_tokens = report.refresh_tokens,
                reset_tokens = report.reset_tokens,
                devices = report.devices,
                "cleanup deleted rows past their retention"
            );
        }
        Ok(report)
    }
}
