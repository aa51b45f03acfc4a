//! The keyed audit chain: its MAC key comes from the keyring under its own
//! purpose label, so only a holder of the master password can extend or
//! re-forge the chain. At start-up a chain written before keying is verified
//! and continued from a marker row (see `store::audit`).
//!
//! The head (the newest row's sequence and hash) is published periodically,
//! as a log line when it moves and as the gauge
//! `latchkey_audit_head_sequence`. Kept outside the database (log storage,
//! a ticket, an operator's notes), a head later lets
//! `latchkey audit verify --head SEQ:HASH` prove that no row up to it was
//! deleted. Each publication also checks that the head published before is
//! still in the table.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Result;
use super::keyring::Keyring;
use crate::store::audit::{self as store, Keying};
pub use crate::store::audit::{ChainFault, ChainHead, ChainReport};
use crate::store::db::Db;

/// The keyring purpose label of the chain key.
pub const CHAIN_KEY_LABEL: &str = "audit-chain";

/// How often the head is published.
pub const HEAD_PUBLICATION_INTERVAL: Duration = Duration::from_secs(60);

/// Loads the chain key into `db` and keys the chain if it is not yet:
/// older rows are verified with SHA-256, then a marker row continues the
/// chain with MACs. Run before anything is appended.
pub async fn open(db: &Db, keyring: &Keyring, now: DateTime<Utc>) -> Result<()> {
    match store::key_chain(db, *keyring.subkey(CHAIN_KEY_LABEL).bytes(), now).await? {
        Keying::AlreadyKeyed => {}
        Keying::AnchorBroken { anchor } => {
            tracing::error!(
                anchor,
                "the row that keyed the audit chain is gone or altered; the chain is not keyed anew and `latchkey audit verify` reports it"
            );
        }
        Keying::Keyed { marker, unkeyed, broken_at: None } => {
            tracing::info!(marker = %marker, unkeyed, "keyed the audit chain; the older rows verified");
        }
        Keying::Keyed { marker, unkeyed, broken_at: Some(id) } => {
            tracing::error!(
                marker = %marker,
                broken_at = id,
                verified = unkeyed,
                "keyed the audit chain, but its older part is broken at this event id: `latchkey audit verify` will keep reporting it"
            );
        }
    }
    Ok(())
}

/// Verifies the chain, and that it still reaches `head` when given. Writes
/// nothing.
pub async fn verify(db: &Db, keyring: &Keyring, head: Option<&ChainHead>) -> Result<ChainReport> {
    store::load_chain_key(db, *keyring.subkey(CHAIN_KEY_LABEL).bytes())?;
    Ok(store::verify(db, head).await?)
}

/// Publishes the head; remembers the last one published.
#[derive(Debug, Default)]
pub struct HeadPublisher {
    published: Option<ChainHead>,
}

impl HeadPublisher {
    /// One publication: checks that the head published before is still
    /// there, then sets the gauge and logs the head when it moved.
    pub async fn publish(&mut self, db: &Db) -> Result<Option<ChainHead>> {
        if let Some(before) = &self.published
            && store::hash_at(db, before.sequence).await?.as_deref() != Some(before.hash.as_str())
        {
            metrics::counter!("latchkey_audit_head_lost_total").increment(1);
            tracing::error!(
                head = %before,
                "the audit log no longer holds the head published before: its newest rows were deleted or replaced"
            );
        }
        let head = store::chain_head(db).await?;
        if let Some(head) = &head {
            #[allow(clippy::cast_precision_loss)] // exact below 2^53
            metrics::gauge!("latchkey_audit_head_sequence").set(head.sequence as f64);
            if self.published.as_ref() != Some(head) {
                tracing::info!(head = %head, sequence = head.sequence, hash = %head.hash, "audit chain head");
            }
        }
        self.published.clone_from(&head);
        Ok(head)
    }
}
