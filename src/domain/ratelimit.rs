//! Sliding-window rate limits: the built-in limits on the authentication
//! endpoints, and decisions for other services (`/v1/ratelimit/check`).
//!
//! Decisions come from the shared fast-path store (Redis), so every replica
//! counts against one window. When Redis does not answer, decisions fall
//! back to an in-process window of the same shape: limits get per-instance
//! rather than shared for the outage, never unlimited. The fallback is
//! logged once per outage, counted in metrics, and ends by itself: after a
//! short pause the next decision tries Redis again.
//!
//! The rules themselves ([`Rule`], [`EndpointLimits`], [`Namespace`]) are
//! plain data defined here; configuration deserializes into them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::core::{ClientInfo, Core};
use super::{Error, Result};
use crate::store::fast::{MemoryStore, WindowDecision, WindowRule};
use crate::store::{Fast, FastStore as _};

/// After a failed Redis call, decide locally for this long before trying
/// Redis again (so an outage does not add a timeout to every request).
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);
pub const MAX_KEY_CHARS: usize = 256;

/// One sliding-window rule: at most `limit` in any `window`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub limit: u64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Rule {
    pub const fn new(limit: u64, window_secs: u64) -> Self {
        Self { limit, window: Duration::from_secs(window_secs) }
    }
}

/// The built-in limits of one endpoint, per client IP, per username and
/// per (IP, username). A missing rule is not enforced.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointLimits {
    pub per_ip: Option<Rule>,
    pub per_username: Option<Rule>,
    pub per_ip_username: Option<Rule>,
}

/// A namespace of the rate-limit API for other services.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    pub limit: u64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// The limited endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Registration,
    LoginStart,
    LoginFinish,
    Totp,
    Refresh,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::LoginStart => "login_start",
            Self::LoginFinish => "login_finish",
            Self::Totp => "totp",
            Self::Refresh => "refresh",
        }
    }
}

/// The configured built-in limits.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinLimits {
    pub registration: EndpointLimits,
    pub login_start: EndpointLimits,
    pub login_finish: EndpointLimits,
    pub totp: EndpointLimits,
    pub refresh: EndpointLimits,
    /// Unknown or invalid bearer tokens per client IP.
    pub bad_tokens: Rule,
}

impl BuiltinLimits {
    fn of(&self, action: Action) -> &EndpointLimits {
        match action {
            Action::Registration => &self.registration,
            Action::LoginStart => &self.login_start,
            Action::LoginFinish => &self.login_finish,
            Action::Totp => &self.totp,
            Action::Refresh => &self.refresh,
        }
    }
}

/// Shared decisions with a local fallback.
pub struct Limiter {
    fast: Fast,
    local: MemoryStore,
    falling_back: AtomicBool,
    retry_redis_at_ms: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Limiter {
    pub fn new(fast: Fast) -> Self {
        Self {
            fast,
            local: MemoryStore::new(),
            falling_back: AtomicBool::new(false),
            retry_redis_at_ms: AtomicU64::new(0),
        }
    }

    /// This instance's own store, for state that must hold while Redis is
    /// down.
    pub fn local(&self) -> &MemoryStore {
        self.fast.as_local().unwrap_or(&self.local)
    }

    /// Whether decisions are currently local because Redis is down.
    pub fn is_falling_back(&self) -> bool {
        self.falling_back.load(Ordering::Relaxed)
    }

    pub async fn decide(&self, key: &str, rule: Rule, cost: u64) -> WindowDecision {
        let decisions = self.decide_all(&[WindowRule { key, limit: rule.limit, window: rule.window }], cost).await;
        decisions.into_iter().next().unwrap_or(WindowDecision {
            allowed: false,
            limit: rule.limit,
            remaining: 0,
            reset_ms: 0,
            retry_after_ms: 1000,
        })
    }

    /// Decisions for several rules in one step (see
    /// [`FastStore::sliding_windows`]): in order, ending at the first
    /// refusal.
    pub async fn decide_all(&self, rules: &[WindowRule<'_>], cost: u64) -> Vec<WindowDecision> {
        let shared = self.fast.as_local().is_none();
        if shared && now_ms() >= self.retry_redis_at_ms.load(Ordering::Relaxed) {
            match self.fast.sliding_windows(rules, cost).await {
                Ok(decisions) => {
                    if self.falling_back.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis answers again: rate limits are shared again");
                    }
                    return decisions;
                }
                Err(e) => {
                    self.retry_redis_at_ms.store(
                        now_ms() + u64::try_from(RETRY_REDIS_AFTER.as_millis()).unwrap_or(1000),
                        Ordering::Relaxed,
                    );
                    if !self.falling_back.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "Redis unavailable: rate limits fall back to this instance");
                    }
                }
            }
        }
        if shared {
            metrics::counter!("latchkey_ratelimit_fallback_total").increment(1);
        }
        let store = self.fast.as_local().unwrap_or(&self.local);
        // The in-process store cannot fail.
        match store.sliding_windows(rules, cost).await {
            Ok(decisions) => decisions,
            Err(_) => rules
                .iter()
                .take(1)
                .map(|rule| WindowDecision {
                    allowed: false,
                    limit: rule.limit,
                    remaining: 0,
                    reset_ms: 0,
                    retry_after_ms: 1000,
                })
                .collect(),
        }
    }
}

pub(super) fn refused(decision: WindowDecision, rule: Rule) -> Error {
    Error::RateLimited {
        retry_after_ms: decision.retry_after_ms,
        limit: rule.limit,
        remaining: decision.remaining,
        reset_ms: decision.reset_ms,
        window_secs: rule.window.as_secs().max(1),
    }
}

impl Core {
    /// Applies the built-in limits of `action` for this client (and user,
    /// when known): per IP, per username, per (IP, username), in that order
    /// and in one fast-store round trip.
    pub(crate) async fn enforce(&self, action: Action, client: &ClientInfo, username: Option<&str>) -> Result<()> {
        self.enforce_rules(action, client, true, username).await
    }

    /// The per-IP limit of `action`, checked before anything else.
    pub(crate) async fn enforce_ip(&self, action: Action, client: &ClientInfo) -> Result<()> {
        self.enforce_rules(action, client, true, None).await
    }

    /// The per-username and per-(IP, username) limits of `action`.
    pub(crate) async fn enforce_user(&self, action: Action, client: &ClientInfo, username: &str) -> Result<()> {
        self.enforce_rules(action, client, false, Some(username)).await
    }

    /// The chosen rules of `action`, decided in one step: the per-IP rule
    /// (with `ip`), then, with a username, the per-username and
    /// per-(IP, username) rules. The first refusal stops the rest, as
    /// separate checks in that order would.
    async fn enforce_rules(&self, action: Action, client: &ClientInfo, ip: bool, username: Option<&str>) -> Result<()> {
        let limits = self.limits.of(action);
        let scope = action.name();
        let mut chosen: [(Option<Rule>, String); 3] = Default::default();
        let mut n = 0;
        let subject =
            (ip || username.is_some_and(|_| limits.per_ip_username.is_some())).then(|| client_subject(client));
        if let (true, Some(rule), Some(subject)) = (ip, limits.per_ip, &subject) {
            chosen[n] = (Some(rule), self.rate_key(scope, &format!("ip|{subject}")));
            n += 1;
        }
        if let Some(username) = username {
            if let Some(rule) = limits.per_username {
                chosen[n] = (Some(rule), self.rate_key(scope, &format!("user|{username}")));
                n += 1;
            }
            if let (Some(rule), Some(subject)) = (limits.per_ip_username, &subject) {
                chosen[n] = (Some(rule), self.rate_key(scope, &format!("ipuser|{subject}|{username}")));
                n += 1;
            }
        }
        if n == 0 {
            return Ok(());
        }
        let rules: Vec<WindowRule<'_>> = chosen[..n]
            .iter()
            .filter_map(|(rule, key)| rule.map(|r| WindowRule { key, limit: r.limit, window: r.window }))
            .collect();
        let decisions = self.limiter.decide_all(&rules, 1).await;
        // The refusal, if any, is the last decision made.
        match decisions.last().zip(decisions.len().checked_sub(1).and_then(|i| chosen[i].0)) {
            Some((decision, rule)) if !decision.allowed => {
                metrics::counter!("latchkey_ratelimited_total", "action" => scope).increment(1);
                Err(refused(*decision, rule))
            }
            _ => Ok(()),
        }
    }

    /// Before a session-token lookup reaches the database: refuses a client
    /// that has presented too many unknown or invalid tokens (one fast-store
    /// read, on cache misses only).
    pub(crate) async fn refuse_token_flood(&self, client: &ClientInfo) -> Result<()> {
        let marker = self.rate_key("bad_token_refused", &client_subject(client));
        let wait = match self.fast.ttl(&marker).await {
            Ok(wait) => wait,
            // Redis down: this instance's own marker (set below) decides.
            Err(_) => self.limiter.local().ttl(&marker).await.ok().flatten(),
        };
        match wait {
            Some(wait) => Err(self.token_flood_refusal(wait)),
            None => Ok(()),
        }
    }

    /// Counts an unknown or invalid token from this client: `Unauthorized`,
    /// or `RateLimited` once the client is over its budget.
    pub(crate) async fn bad_token(&self, client: &ClientInfo) -> Error {
        let rule = self.limits.bad_tokens;
        let subject = client_subject(client);
        let decision = self.limiter.decide(&self.rate_key("bad_token", &subject), rule, 1).await;
        if decision.allowed {
            return Error::Unauthorized;
        }
        metrics::counter!("latchkey_ratelimited_total", "action" => "bad_token").increment(1);
        let wait = Duration::from_millis(decision.retry_after_ms.max(1000));
        let marker = self.rate_key("bad_token_refused", &subject);
        if let Err(e) = self.fast.set(&marker, b"1", wait).await {
            tracing::warn!(error = %e, "could not record a token flood in Redis; recording it on this instance");
            let _ = self.limiter.local().set(&marker, b"1", wait).await;
        }
        refused(decision, rule)
    }

    fn token_flood_refusal(&self, wait: Duration) -> Error {
        let rule = self.limits.bad_tokens;
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        Error::RateLimited {
            retry_after_ms: ms,
            limit: rule.limit,
            remaining: 0,
            reset_ms: ms,
            window_secs: rule.window.as_secs().max(1),
        }
    }

    /// One limiter bucket. The subject (an address, a username, a caller's
    /// key) is a keyed hash: Redis never holds a username (nor one a reader
    /// could test a list of names against), and braces in a subject
    /// cannot move the hash tag, which covers the whole bucket so the log and
    /// its counter share a Redis Cluster slot.
    fn rate_key(&self, scope: &str, subject: &str) -> String {
        self.keys.tagged("rl", &format!("{scope}|{}", self.name_hash(subject)))
    }

    /// A decision for another service.
    pub async fn ratelimit_check(&self, namespace: &str, key: &str, cost: u64) -> Result<(WindowDecision, Rule)> {
        let ns: &Namespace = self.namespaces.iter().find(|n| n.name == namespace).ok_or(Error::NotFound)?;
        if cost == 0 || cost > ns.limit {
            return Err(Error::InvalidRequest(format!(
                "cost must be between 1 and the namespace limit ({})",
                ns.limit
            )));
        }
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Err(Error::InvalidRequest(format!("key must be 1 to {MAX_KEY_CHARS} characters")));
        }
        let rule = Rule { limit: ns.limit, window: ns.window };
        let decision = self.limiter.decide(&self.rate_key(&format!("ns:{namespace}"), key), rule, cost).await;
        Ok((decision, rule))
    }
}

fn client_subject(client: &ClientInfo) -> String {
    client.ip.map_or_else(|| "-".to_owned(), |ip| rate_subject(ip).to_string())
}

/// The address a limit counts: IPv4 as is; IPv6 by its /64, since one
/// client usually holds a whole /64 and could otherwise rotate through it.
pub fn rate_subject(ip: std::net::IpAddr) -> ipnet::IpNet {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => ipnet::IpNet::V4(ipnet::Ipv4Net::from(v4)),
        std::net::IpAddr::V6(v6) => {
            ipnet::IpNet::V6(ipnet::Ipv6Net::new(v6, 64).map_or(ipnet::Ipv6Net::from(v6), |n| n.trunc()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rate_subject;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a = rate_subject("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = rate_subject("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        let c = rate_subject("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b, "one /64, one bucket");
        assert_ne!(a, c);
        assert_eq!(
            rate_subject("::ffff:192.0.2.7".parse().expect("ip")),
            rate_subject("192.0.2.7".parse().expect("ip"))
        );
    }
}
