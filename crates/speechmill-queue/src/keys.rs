//! Storage of API keys: only a keyed hash of each key is kept, with its scopes.

use crate::QueueError;
use crate::queue::Millis;

/// An API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRecord {
    /// The key's public id.
    pub id: String,
    /// What the key may do (`submit`, `read`, `admin`).
    pub scopes: Vec<String>,
    /// A note for people.
    pub label: String,
    /// When it was created.
    pub created_at: Millis,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Millis>,
}

/// Where API keys are kept; both queue backends implement it, next to the jobs.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key's id, hash, scopes and label.
    async fn insert_key(&self, id: &str, hash: &str, scopes: &[String], label: &str) -> Result<(), QueueError>;

    /// The key whose hash this is, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, QueueError>;

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, QueueError>;

    /// Revokes a key; `false` if there is no such unrevoked key.
    async fn revoke_key(&self, id: &str) -> Result<bool, QueueError>;
}
