//! Named secrets: webhook signing keys now, and the storage the credential vault builds on.
//!
//! A secret is written once through the API (`PUT /v1/secrets/{name}`) and never read back
//! by any API: the engine opens it in memory when it needs it (to verify a webhook) and
//! drops the plaintext, zeroised, right after. Rows hold only what [`crate::vault`] sealed,
//! bound to their workspace and name, so a row copied elsewhere does not open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemas::db::entities::secret;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::vault::{Aad, Keyring, Sealed, VaultError};

/// The `kind` secrets are sealed under (see [`Aad`]).
pub const KIND: &str = "secret";
/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Why a secret could not be stored or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Sealing or opening failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The engine runs without a master key, so it can neither seal nor open secrets.
    #[error(
        "no master key is configured (set SWITCHYARD_MASTER_KEY or --master-key-file), so secrets cannot be stored or used"
    )]
    NoKeyring,
    /// The name is not usable.
    #[error("{0}")]
    BadName(String),
    /// The value is empty or too large.
    #[error("{0}")]
    BadValue(String),
    /// No secret has this name (in this workspace).
    #[error("secret `{0}` does not exist")]
    NotFound(String),
}

/// What the API shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Name.
    pub name: String,
    /// Version of the master key its data key is wrapped with.
    pub key_version: i32,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last replaced at.
    pub updated_at: DateTime<Utc>,
}

/// Checks a secret name: the names definitions may refer to (1 to 64 of lowercase letters,
/// digits, `-` and `_`, starting with a letter or digit).
pub fn check_name(name: &str) -> Result<(), SecretError> {
    if schemas::validate::is_connection_name(name) {
        Ok(())
    } else {
        Err(SecretError::BadName(format!(
            "secret name `{}` must be 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            name.escape_debug()
        )))
    }
}

fn info(row: secret::Model) -> SecretInfo {
    SecretInfo {
        name: row.name,
        key_version: row.key_version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// Seals `value` and stores it under `name`, replacing any earlier value. Returns what was
/// stored and whether the name is new.
pub async fn put(
    db: &DatabaseConnection,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    name: &str,
    value: &[u8],
    actor: &str,
) -> Result<(SecretInfo, bool), SecretError> {
    check_name(name)?;
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return Err(SecretError::BadValue(format!(
            "a secret's value must be 1 to {MAX_SECRET_BYTES} bytes, got {}",
            value.len()
        )));
    }
    let keyring = keyring.ok_or(SecretError::NoKeyring)?;
    let sealed = keyring.seal(&Aad::new(workspace_id, KIND, name), value)?;
    let now = Utc::now();
    let tx = db.begin().await?;
    let existing = find(&tx, workspace_id, name).await?;
    let created = existing.is_none();
    let row = secret::ActiveModel {
        id: Set(existing.as_ref().map_or_else(Uuid::now_v7, |e| e.id)),
        workspace_id: Set(workspace_id),
        name: Set(name.to_owned()),
        key_version: Set(i32::try_from(sealed.key_version).unwrap_or(i32::MAX)),
        wrapped_key: Set(sealed.wrapped_key),
        ciphertext: Set(sealed.ciphertext),
        created_at: Set(existing.as_ref().map_or(now, |e| e.created_at)),
        updated_at: Set(now),
    };
    // Two writers racing on a new name: the later one replaces the earlier value.
    secret::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([secret::Column::WorkspaceId, secret::Column::Name])
                .update_columns([
                    secret::Column::KeyVersion,
                    secret::Column::WrappedKey,
                    secret::Column::Ciphertext,
                    secret::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
    let stored = find(&tx, workspace_id, name)
        .await?
        .ok_or_else(|| SecretError::NotFound(name.to_owned()))?;
    crate::audit::append(
        &tx,
        vec![(
            workspace_id,
            crate::audit::Entry::admin(
                "secret.stored",
                actor,
                serde_json::json!({ "secret": name, "created": created, "key_version": stored.key_version }),
            ),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok((info(stored), created))
}

async fn find<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<Option<secret::Model>, SecretError> {
    Ok(secret::Entity::find()
        .filter(secret::Column::WorkspaceId.eq(workspace_id))
        .filter(secret::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// Opens the named secrets, in the order given. A missing name is an error naming it.
pub async fn open(
    db: &DatabaseConnection,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    names: &[&str],
) -> Result<Vec<Zeroizing<Vec<u8>>>, SecretError> {
    open_cached(db, None, keyring, workspace_id, names).await
}

/// How long [`SealedCache`] keeps a sealed row: a secret replaced or deleted through another
/// engine is seen by this one at most this late.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Sealed rows (never plaintext) read recently, so a burst of webhook deliveries does not
/// read the same secret once per delivery. Replacing or deleting a secret through this engine
/// takes effect here at once; through another engine, within [`CACHE_TTL`].
#[derive(Debug, Default)]
pub struct SealedCache {
    rows: Mutex<HashMap<(Uuid, String), (Instant, Sealed)>>,
}

/// Rows kept before the cache starts over.
const CACHE_ROWS: usize = 4_096;

impl SealedCache {
    fn get(&self, workspace_id: Uuid, name: &str, now: Instant) -> Option<Sealed> {
        let rows = self.rows.lock().ok()?;
        let (at, sealed) = rows.get(&(workspace_id, name.to_owned()))?;
        (now.saturating_duration_since(*at) < CACHE_TTL).then(|| sealed.clone())
    }

    fn put(&self, workspace_id: Uuid, name: &str, sealed: Sealed, now: Instant) {
        if let Ok(mut rows) = self.rows.lock() {
            if rows.len() >= CACHE_ROWS {
                rows.clear();
            }
            rows.insert((workspace_id, name.to_owned()), (now, sealed));
        }
    }

    /// Forgets a secret, after it was replaced or deleted.
    pub fn forget(&self, workspace_id: Uuid, name: &str) {
        if let Ok(mut rows) = self.rows.lock() {
            rows.remove(&(workspace_id, name.to_owned()));
        }
    }
}

/// [`open`], reading rows through `cache` when given.
pub async fn open_cached(
    db: &DatabaseConnection,
    cache: Option<&SealedCache>,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    names: &[&str],
) -> Result<Vec<Zeroizing<Vec<u8>>>, SecretError> {
    open_each(db, cache, keyring, workspace_id, names)
        .await?
        .into_iter()
        .zip(names)
        .map(|(s, name)| s.ok_or_else(|| SecretError::NotFound((*name).to_owned())))
        .collect()
}

/// Opens those of the named secrets that exist, through `cache`; fails only when none does.
/// A webhook trigger lists several secrets while one is rotated, and keeps working when an
/// old one is deleted before the definition is updated.
pub async fn open_present(
    db: &DatabaseConnection,
    cache: Option<&SealedCache>,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    names: &[&str],
) -> Result<Vec<Zeroizing<Vec<u8>>>, SecretError> {
    let present: Vec<_> = open_each(db, cache, keyring, workspace_id, names)
        .await?
        .into_iter()
        .flatten()
        .collect();
    if present.is_empty() && !names.is_empty() {
        return Err(SecretError::NotFound(names.join("`, `")));
    }
    Ok(present)
}

async fn open_each(
    db: &DatabaseConnection,
    cache: Option<&SealedCache>,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    names: &[&str],
) -> Result<Vec<Option<Zeroizing<Vec<u8>>>>, SecretError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let keyring = keyring.ok_or(SecretError::NoKeyring)?;
    let now = Instant::now();
    let mut sealed: Vec<Option<Sealed>> = names
        .iter()
        .map(|name| cache.and_then(|c| c.get(workspace_id, name, now)))
        .collect();
    if sealed.iter().any(Option::is_none) {
        let missing: Vec<&str> = names
            .iter()
            .zip(&sealed)
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| *n)
            .collect();
        let rows = secret::Entity::find()
            .filter(secret::Column::WorkspaceId.eq(workspace_id))
            .filter(secret::Column::Name.is_in(missing))
            .all(db)
            .await?;
        for (name, slot) in names.iter().zip(sealed.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            if let Some(row) = rows.iter().find(|r| r.name == *name) {
                let s = Sealed {
                    key_version: u32::try_from(row.key_version).unwrap_or(0),
                    wrapped_key: row.wrapped_key.clone(),
                    ciphertext: row.ciphertext.clone(),
                };
                if let Some(c) = cache {
                    c.put(workspace_id, name, s.clone(), now);
                }
                *slot = Some(s);
            }
        }
    }
    names
        .iter()
        .zip(sealed)
        .map(|(name, s)| match s {
            None => Ok(None),
            Some(s) => Ok(Some(keyring.open(&Aad::new(workspace_id, KIND, name), &s)?)),
        })
        .collect()
}

/// Every secret of a workspace, by name, without values.
pub async fn list(
    db: &DatabaseConnection,
    workspace_id: Uuid,
) -> Result<Vec<SecretInfo>, SecretError> {
    Ok(secret::Entity::find()
        .filter(secret::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(secret::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(info)
        .collect())
}

/// Deletes a secret; false when there was none.
pub async fn delete<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<bool, SecretError> {
    let done = secret::Entity::delete_many()
        .filter(secret::Column::WorkspaceId.eq(workspace_id))
        .filter(secret::Column::Name.eq(name))
        .exec(db)
        .await?;
    Ok(done.rows_affected > 0)
}
