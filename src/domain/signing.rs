//! Tokens for other services: Ed25519-signed JWTs with a published JWKS,
//! and RFC 7662 introspection of session tokens and JWTs.
//!
//! ```text
//! keys:  active (signs) --rotation--> previous (published, verifies) --after the
//!        longest JWT lifetime--> retired
//! jwt:   session token --> POST /v1/tokens/jwt --> JWS (EdDSA, kid), short-lived
//! check: JWKS offline, or POST /v1/tokens/introspect (revocation reaches JWTs)
//! ```
//!
//! Signing keys are generated here, their private half sealed by the keyring
//! (never in plaintext at rest) and shared by every replica through the
//! database. Rotation happens by age (`tokens.rotate_after`) or on demand; a
//! rotated key stays published until every token it signed has expired.
//! A revoked session's id stays in the fast store for the longest JWT
//! lifetime (the denylist), and introspection also asks the database, so
//! revocation reaches a session's JWTs even after a flush.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, Sealed, SealedColumn};
use super::ratelimit::Rule;
use super::sessions::CurrentSession;
use super::states::Aal;
use super::tokens::{self, TokenKind};
use super::{Error, Result};
use crate::store::FastStore as _;
use crate::store::signing::{self as store, SigningKeyRow};

/// The longest a JWT may live; a rotated key stays published this long.
pub const MAX_JWT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long a loaded key set is used before the database is asked again
/// (a rotation on another replica is seen within this, or at once on an
/// unknown `kid`).
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// A rotated key stays published this long after it stopped signing: the
/// longest JWT, the other replicas' reload, and some clock skew.
const PUBLISHED_AFTER_ROTATION: Duration = Duration::from_secs(15 * 60 + 60 + 120);
/// JWTs a session may obtain per minute.
const JWT_PER_SESSION: Rule = Rule::new(60, 60);

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), before the seed.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The claims of a latchkey JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub aal: Aal,
    pub auth_time: i64,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// One published public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    /// base64url of the 32-byte Ed25519 public key.
    pub x: String,
}

/// What introspection says about a token (RFC 7662).
#[derive(Debug, Clone, Default)]
pub struct Introspection {
    pub active: bool,
    pub sub: Option<Uuid>,
    pub sid: Option<Uuid>,
    pub aal: Option<Aal>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub token_type: Option<&'static str>,
}

/// A signing key's state, for `latchkey keys status` and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct SigningKeyStatus {
    pub kid: Uuid,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

struct KeySet {
    active: Option<(String, EncodingKey)>,
    published: Vec<PublicKey>,
    verifying: HashMap<String, DecodingKey>,
    loaded_at: DateTime<Utc>,
}

/// The loaded keys, shared by the requests of this replica.
#[derive(Default)]
pub struct KeyCache(RwLock<Option<Arc<KeySet>>>);

impl Core {
    /// Makes sure a signing key exists, rotates it when it is older than
    /// `tokens.rotate_after`, and retires previous keys whose tokens have
    /// all expired. Runs at start-up and in the maintenance job.
    pub async fn signing_key_maintenance(&self, now: DateTime<Utc>) -> Result<()> {
        let keys = store::all(&self.db).await?;
        let active = keys.iter().find(|k| k.state == store::ACTIVE);
        let due = active.is_none_or(|k| now - k.created_at >= chrono_duration(self.tokens.rotate_after));
        if due && self.rotate_signing(active.map(|k| k.id), now).await?.is_some() {
            self.audit_signing_rotation("policy", now).await?;
        }
        if store::retire_previous(&self.db, now - chrono_duration(PUBLISHED_AFTER_ROTATION)).await? > 0 {
            *self.signing.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        Ok(())
    }

    /// A new signing key now (CLI, admin API), audited.
    pub async fn rotate_signing_key(&self, by: &'static str, now: DateTime<Utc>) -> Result<Uuid> {
        let kid = self.rotate_signing_now(now).await?;
        self.audit_signing_rotation(by, now).await?;
        Ok(kid)
    }

    /// Rotates from the key active now; a conflict if another replica
    /// rotated at the same moment.
    async fn rotate_signing_now(&self, now: DateTime<Utc>) -> Result<Uuid> {
        let active = store::all(&self.db).await?.into_iter().find(|k| k.state == store::ACTIVE).map(|k| k.id);
        self.rotate_signing(active, now)
            .await?
            .ok_or_else(|| Error::Conflict("another instance rotated the signing key at the same moment".into()))
    }

    /// An admin rotates the signing key (step-up), audited with the admin.
    pub async fn admin_rotate_signing_key(
        &self,
        admin: &CurrentSession,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Uuid> {
        self.require_recent_auth(admin, now)?;
        let kid = self.rotate_signing_now(now).await?;
        let details = serde_json::json!({
            "by": "admin", "admin": self.audit.pseudonym(admin.user_id), "kind": "signing", "kid": kid,
        });
        let event = self.audit.event(events::KEY_ROTATE, client, now).session(admin.session_id).sealed(details).await?;
        self.audit.append(&[event]).await?;
        Ok(kid)
    }

    async fn rotate_signing(&self, expected: Option<Uuid>, now: DateTime<Utc>) -> Result<Option<Uuid>> {
        let seed = Zeroizing::new({
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            seed
        });
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let kid = Uuid::now_v7();
        // The kid is sealed with the seed, so a row cannot borrow another
        // row's private key.
        let mut plain = Zeroizing::new(seed.to_vec());
        plain.extend_from_slice(kid.as_bytes());
        let sealed = self.keyring.seal(SealedColumn::SigningKey, Owner::System, &plain, now).await?;
        let row = SigningKeyRow {
            id: kid,
            key_id: sealed.key_id,
            ciphertext: sealed.ciphertext,
            public_key: URL_SAFE_NO_PAD.encode(public),
            state: store::ACTIVE.to_owned(),
            created_at: now,
            retired_at: None,
        };
        if !store::rotate(&self.db, expected, &row, now).await? {
            return Ok(None);
        }
        *self.signing.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        tracing::info!(kid = %kid, "new JWT signing key");
        Ok(Some(kid))
    }

    async fn audit_signing_rotation(&self, by: &'static str, now: DateTime<Utc>) -> Result<()> {
        let event = self
            .audit
            .event(events::KEY_ROTATE, &ClientInfo::default(), now)
            .sealed(serde_json::json!({"by": by, "kind": "signing"}))
            .await?;
        self.audit.append(&[event]).await
    }

    /// The signing keys, newest first.
    pub async fn signing_keys_status(&self) -> Result<Vec<SigningKeyStatus>> {
        Ok(store::all(&self.db)
            .await?
            .into_iter()
            .map(|k| SigningKeyStatus { kid: k.id, state: k.state, created_at: k.created_at, retired_at: k.retired_at })
            .collect())
    }

    async fn key_set(&self, now: DateTime<Utc>, force: bool) -> Result<Arc<KeySet>> {
        if !force
            && let Some(set) = self.signing.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && now - set.loaded_at < chrono_duration(RELOAD_EVERY)
        {
            return Ok(set.clone());
        }
        let mut set = KeySet { active: None, published: Vec::new(), verifying: HashMap::new(), loaded_at: now };
        for key in store::all(&self.db).await? {
            if key.state == store::RETIRED {
                continue;
            }
            // The public key is derived from the sealed private half, never
            // taken from the row: someone who can write the table cannot
            // publish a key of their own.
            let kid = key.id.to_string();
            let sealed = Sealed { key_id: key.key_id, ciphertext: key.ciphertext };
            let Some(seed) = self.signing_seed(&key.id, &sealed).await else {
                // Not ours (planted, or another row's): never published.
                tracing::error!(kid = %kid, "a signing key does not open to its own private half; skipped");
                metrics::counter!("latchkey_integrity_errors_total", "table" => "signing_keys").increment(1);
                continue;
            };
            let x = URL_SAFE_NO_PAD.encode(ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes());
            if x != key.public_key {
                tracing::error!(kid = %kid, "a signing key's stored public key differs from its private half; publishing the derived one");
            }
            let decoding = DecodingKey::from_ed_components(&x)
                .map_err(|_| Error::Integrity(format!("signing key {kid} has a malformed public key")))?;
            set.verifying.insert(kid.clone(), decoding);
            if key.state == store::ACTIVE && set.active.is_none() {
                let mut der = Zeroizing::new(PKCS8_ED25519_PREFIX.to_vec());
                der.extend_from_slice(seed.as_ref());
                set.active = Some((kid.clone(), EncodingKey::from_ed_der(&der)));
            }
            set.published.push(PublicKey { kid, x });
        }
        let set = Arc::new(set);
        *self.signing.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(set.clone());
        Ok(set)
    }

    /// The private half sealed in a row, if it opens and names this kid.
    async fn signing_seed(&self, kid: &Uuid, sealed: &Sealed) -> Option<Zeroizing<[u8; 32]>> {
        let plain = self.keyring.open_sealed(SealedColumn::SigningKey, Owner::System, sealed).await.ok()?;
        let (seed, sealed_kid) = plain.split_at(32.min(plain.len()));
        let seed: [u8; 32] = seed.try_into().ok()?;
        (sealed_kid == kid.as_bytes()).then(|| Zeroizing::new(seed))
    }

    /// The published public keys (the JWKS).
    pub async fn jwks(&self, now: DateTime<Utc>) -> Result<Vec<PublicKey>> {
        Ok(self.key_set(now, false).await?.published.clone())
    }

    /// A short-lived JWT for the caller's session.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn issue_jwt(&self, current: &CurrentSession, now: DateTime<Utc>) -> Result<(String, DateTime<Utc>)> {
        let key = self.keys.tagged("rl", &format!("jwt|{}", current.session_id));
        let decision = self.limiter.decide(&key, JWT_PER_SESSION, 1).await;
        if !decision.allowed {
            return Err(super::ratelimit::refused(decision, JWT_PER_SESSION));
        }
        let set = self.key_set(now, false).await?;
        let Some((kid, encoding)) = &set.active else {
            return Err(Error::Unavailable("no JWT signing key yet".into()));
        };
        // Whole seconds, as `exp` carries it: the answer and the token agree.
        let expires_at = (now + chrono_duration(self.tokens.jwt_lifetime)).min(current.expires_at);
        let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
        let claims = Claims {
            iss: self.tokens.issuer.clone(),
            aud: self.tokens.audience.clone(),
            sub: current.user_id.to_string(),
            sid: current.session_id.to_string(),
            aal: current.aal,
            auth_time: current.auth_time.timestamp(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: tokens::random_id(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| Error::Internal(format!("signing a JWT: {e}")))?;
        metrics::counter!("latchkey_jwt_issued_total").increment(1);
        Ok((token, expires_at))
    }

    /// RFC 7662: whether a session token or a JWT is active now. Anything
    /// that is not (expired, revoked, made up, malformed) is inactive, with
    /// no reason given.
    pub async fn introspect(&self, token: &str, now: DateTime<Utc>) -> Result<Introspection> {
        if token.starts_with(TokenKind::Session.prefix()) {
            return self.introspect_session(token, now).await;
        }
        self.introspect_jwt(token, now).await
    }

    async fn introspect_session(&self, token: &str, now: DateTime<Utc>) -> Result<Introspection> {
        let Some(hash) = tokens::verify_shape(TokenKind::Session, token) else { return Ok(Introspection::default()) };
        let Some(record) = crate::store::sessions::find_by_token_hash(&self.db, &hash).await? else {
            return Ok(Introspection::default());
        };
        let session = CurrentSession::from(record.clone());
        if record.revoked_at.is_some() || !self.is_live(&session, now) {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            sub: Some(session.user_id),
            sid: Some(session.session_id),
            aal: Some(session.aal),
            exp: Some(session.token_expires_at.min(session.expires_at).timestamp()),
            iat: Some(session.created_at.timestamp()),
            token_type: Some("session_token"),
        })
    }

    async fn introspect_jwt(&self, token: &str, now: DateTime<Utc>) -> Result<Introspection> {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(Introspection::default()) };
        let Some(kid) = header.kid.filter(|_| header.alg == Algorithm::EdDSA) else {
            return Ok(Introspection::default());
        };
        let mut set = self.key_set(now, false).await?;
        if !set.verifying.contains_key(&kid) {
            // Perhaps rotated on another replica since this one loaded: reload
            // when the database has that key (a made-up kid costs one lookup).
            let Ok(id) = kid.parse::<Uuid>() else { return Ok(Introspection::default()) };
            if !store::is_published(&self.db, id).await? {
                return Ok(Introspection::default());
            }
            set = self.key_set(now, true).await?;
        }
        let Some(key) = set.verifying.get(&kid) else { return Ok(Introspection::default()) };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.tokens.issuer]);
        validation.set_audience(&[&self.tokens.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &validation) else {
            return Ok(Introspection::default());
        };
        let claims = data.claims;
        if claims.exp <= now.timestamp() {
            return Ok(Introspection::default());
        }
        let (Ok(sub), Ok(sid)) = (claims.sub.parse::<Uuid>(), claims.sid.parse::<Uuid>()) else {
            return Ok(Introspection::default());
        };
        // The denylist first; the database is the truth (after a flush too).
        if self.fast.get(&self.keys.tagged("revoked_sid", &sid.to_string())).await.ok().flatten().is_some() {
            return Ok(Introspection::default());
        }
        let live = crate::store::sessions::find(&self.db, sub, sid)
            .await?
            .is_some_and(|s| s.revoked_at.is_none() && s.expires_at > now && s.user_id == sub);
        if !live {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            sub: Some(sub),
            sid: Some(sid),
            aal: Some(claims.aal),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            token_type: Some("jwt"),
        })
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
