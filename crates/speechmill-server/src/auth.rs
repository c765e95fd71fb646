//! API keys: generation, the keyed hash that is all the store keeps, scopes, and the check each
//! route makes. Keys are random (244 bits) and long, so a fast keyed hash (HMAC-SHA-256 with a
//! server secret) is enough; a slow password hash would only cap throughput.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use speechmill_queue::{ApiKeyRecord, KeyStore};

use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Submit and cancel jobs.
    Submit,
    /// Read jobs and results.
    Read,
    /// Everything, including dead letters.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "submit" => Ok(Scope::Submit),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?} (expected submit, read or admin)")),
        }
    }
}

/// Why the key secret could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("api key secret {path}: {source}")]
pub struct SecretError {
    /// The file.
    pub path: String,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// Hashes keys with the server's secret.
#[derive(Clone)]
pub struct KeyHasher {
    /// The HMAC key; read once at start-up, never logged.
    secret: Vec<u8>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher { secret: <redacted> }")
    }
}

impl KeyHasher {
    /// A hasher with this secret.
    pub fn new(secret: Vec<u8>) -> Self {
        KeyHasher { secret }
    }

    /// Reads the secret from `path`, creating it (random, mode 0600) if missing. Every node that
    /// shares a database must share this file.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let error = |source| SecretError { path: path.display().to_string(), source };
        match fs::read_to_string(path) {
            Ok(text) => return Ok(KeyHasher::new(text.trim().as_bytes().to_vec())),
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(error(err)),
            Err(_) => {}
        }
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(secret.as_bytes()).map_err(error)?;
                file.sync_all().map_err(error)?;
                Ok(KeyHasher::new(secret.into_bytes()))
            }
            // Another process created it first: use theirs.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(KeyHasher::new(fs::read_to_string(path).map_err(error)?.trim().as_bytes().to_vec()))
            }
            Err(err) => Err(error(err)),
        }
    }

    /// The hex HMAC-SHA-256 of a key.
    pub fn hash(&self, key: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("hmac takes keys of any length");
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// A newly generated key: its public id and the key itself (shown once).
#[derive(Debug)]
pub struct NewKey {
    /// The public id (also inside the key, after `smk_`).
    pub id: String,
    /// The whole key, to give to the client.
    pub key: String,
}

/// Makes a new random key: `smk_<id>_<secret>`, 244 random bits in all.
pub fn generate_key() -> NewKey {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    NewKey { key: format!("smk_{id}_{secret}"), id }
}

/// Creates and stores a key with these scopes; returns it (the only time it is seen).
pub async fn create_key(
    keys: &dyn KeyStore,
    hasher: &KeyHasher,
    scopes: &[Scope],
    label: &str,
) -> Result<NewKey, speechmill_queue::QueueError> {
    let new = generate_key();
    let scopes: Vec<String> = scopes.iter().map(|scope| scope.as_str().to_string()).collect();
    keys.insert_key(&new.id, &hasher.hash(&new.key), &scopes, label).await?;
    Ok(new)
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's public id (recorded as the actor in the audit log).
    pub key_id: String,
}

/// The key presented in `Authorization: Bearer KEY`.
pub fn bearer_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or(ApiError::Unauthorized)
}

/// Checks that the stored key (found by the presented key's hash) is active and holds `scope`
/// (`admin` holds every scope).
pub fn check_scope(record: Option<ApiKeyRecord>, scope: Scope) -> Result<Caller, ApiError> {
    let record = record.ok_or(ApiError::Unauthorized)?;
    if record.revoked_at.is_some() {
        return Err(ApiError::Unauthorized);
    }
    let allowed = record.scopes.iter().any(|held| held == scope.as_str() || held == Scope::Admin.as_str());
    if !allowed {
        return Err(ApiError::Forbidden(scope.as_str()));
    }
    Ok(Caller { key_id: record.id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_secret_and_the_key() {
        let one = KeyHasher::new(b"secret-one".to_vec());
        let two = KeyHasher::new(b"secret-two".to_vec());
        assert_eq!(one.hash("k"), one.hash("k"));
        assert_ne!(one.hash("k"), two.hash("k"));
        assert_ne!(one.hash("k"), one.hash("l"));
        assert_eq!(one.hash("k").len(), 64);
    }

    #[test]
    fn generated_keys_are_long_random_and_carry_their_id() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with(&format!("smk_{}_", a.id)));
        assert!(a.key.len() >= 4 + 12 + 1 + 64);
    }

    fn record(scopes: &[&str], revoked: bool) -> Option<ApiKeyRecord> {
        Some(ApiKeyRecord {
            id: "k".into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            label: String::new(),
            created_at: 0,
            revoked_at: revoked.then_some(1),
        })
    }

    #[test]
    fn scopes_are_checked_and_admin_holds_them_all() {
        assert!(check_scope(record(&["read"], false), Scope::Read).is_ok());
        assert!(matches!(check_scope(record(&["read"], false), Scope::Submit), Err(ApiError::Forbidden("submit"))));
        assert!(check_scope(record(&["admin"], false), Scope::Submit).is_ok());
        assert!(matches!(check_scope(record(&["admin"], true), Scope::Read), Err(ApiError::Unauthorized)));
        assert!(matches!(check_scope(None, Scope::Read), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn only_bearer_credentials_are_taken() {
        let mut headers = HeaderMap::new();
        assert!(bearer_key(&headers).is_err());
        headers.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_key(&headers).is_err());
        headers.insert(AUTHORIZATION, "Bearer smk_a_b".parse().unwrap());
        assert_eq!(bearer_key(&headers).unwrap(), "smk_a_b");
    }

    #[test]
    fn the_hasher_never_prints_its_secret() {
        assert!(!format!("{:?}", KeyHasher::new(b"hunter2".to_vec())).contains("hunter2"));
    }
}
