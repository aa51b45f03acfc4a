//! The session cache in the fast store: whoami's one-GET path.
//!
//! Entries live under the hash of the session's current token and expire
//! with that token. The database stays the truth: every write here is best
//! effort, a read error counts as a miss, and revocation commits to the
//! database before it evicts here. Each entry carries a MAC over its key and
//! value (see `sealing`): an entry written by anyone else (a forged
//! session, an altered expiry or aal) is ignored, counted, and the session
//! is read from the database and the entry rewritten.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use std::sync::Arc;

use super::sealing::FastSeal;
use super::sessions::CurrentSession;
use crate::store::{Fast, FastStore as _, Keys};

pub struct SessionCache {
    fast: Fast,
    keys: Keys,
    seal: Arc<FastSeal>,
}

impl SessionCache {
    pub fn new(fast: Fast, keys: Keys, seal: Arc<FastSeal>) -> Self {
        Self { fast, keys, seal }
    }

    /// The cached session under this token hash; `None` on a miss, an
    /// unreadable entry or an unavailable store.
    pub async fn get(&self, token_hash: &str) -> Option<CurrentSession> {
        let key = self.keys.session(token_hash);
        match self.fast.get(&key).await {
            Ok(None) => None,
            Ok(Some(bytes)) => {
                let entry =
                    self.seal.verified(&key, &bytes).and_then(|v| serde_json::from_slice::<CurrentSession>(v).ok());
                if entry.is_none() {
                    metrics::counter!("latchkey_session_cache_rejected_total").increment(1);
                    tracing::warn!("a session cache entry failed its MAC; reading the database");
                }
                entry.filter(|s| s.token_hash == token_hash)
            }
            Err(e) => {
                metrics::counter!("latchkey_session_cache_errors_total").increment(1);
                tracing::warn!(error = %e, "session cache unavailable; reading the database");
                None
            }
        }
    }

    /// Writes the entry until the token or the session ends. Returns
    /// whether it was written.
    pub async fn put(&self, session: &CurrentSession, now: DateTime<Utc>) -> bool {
        let until = session.token_expires_at.min(session.expires_at);
        let Ok(ttl) = (until - now).to_std() else { return false };
        if ttl.is_zero() {
            return false;
        }
        let Ok(bytes) = serde_json::to_vec(session) else { return false };
        let key = self.keys.session(&session.token_hash);
        match self.fast.set(&key, &self.seal.tagged(&key, &bytes), ttl).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not cache a session");
                false
            }
        }
    }

    /// Drops one entry (best effort: it expires with its token anyway).
    pub async fn remove(&self, token_hash: &str) {
        let _ = self.fast.del(&self.keys.session(token_hash)).await;
    }

    /// After a committed revocation: evicts the entries and keeps each
    /// session id on the denylist for the longest JWT lifetime, so its JWTs
    /// introspect inactive without a database read.
    pub async fn revoked(&self, revoked: &[(Uuid, String)]) {
        for (id, _) in revoked {
            let key = self.keys.tagged("revoked_sid", &id.to_string());
            if let Err(e) = self.fast.set(&key, b"1", super::signing::MAX_JWT_LIFETIME).await {
                tracing::warn!(error = %e, "could not record a revoked session on the JWT denylist");
            }
        }
        self.evict(revoked).await;
    }

    /// Evicts entries of sessions that live on under another token or
    /// state (a refresh, a raised aal): (session id, token hash).
    pub async fn evict(&self, revoked: &[(Uuid, String)]) {
        for (_, hash) in revoked {
            if let Err(e) = self.fast.del(&self.keys.session(hash)).await {
                // The entry expires with the token at the latest; the
                // database already says revoked, so the miss path refuses it.
                tracing::error!(error = %e, "could not evict a revoked session from the cache");
                metrics::counter!("latchkey_session_cache_errors_total").increment(1);
            }
        }
    }
}
