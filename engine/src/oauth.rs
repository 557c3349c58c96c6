//! OAuth 2.0 authorization code with PKCE (RFC 6749 §4.1, RFC 7636 S256) for `oauth2_code`
//! connections.
//!
//! 1. An admin opens `GET /v1/oauth/{connection}/start`. [`start`] makes a random `state`
//!    and PKCE verifier, stores the state's SHA-256 with the verifier sealed by the vault
//!    (table `oauth_states`, ten minutes), and answers the provider's authorize URL.
//! 2. The provider sends the browser to `GET /v1/oauth/callback?code&state` with no bearer
//!    token: the `state` is what authenticates it. [`callback`] consumes the state (a
//!    deleted row: each state works once), exchanges the code with the verifier, seals the
//!    tokens, marks the connection `active` and appends `connection.authorized` to the audit
//!    ledger in the same transaction.
//!
//! Workers refresh the tokens afterwards (`workers::credentials`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use connectors::credential::{OAuthConfig, OAuthSecret};
use connectors::oauth::{self, Grant, TokenError};
use ring::rand::{SecureRandom, SystemRandom};
use schemas::db::entities::connection::{self, ConnectionStatus};
use schemas::db::entities::oauth_state;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set,
    TransactionTrait,
};
use serde_json::json;
use sha2::Digest as _;
use uuid::Uuid;

use crate::vault::{Aad, Keyring, Sealed, VaultError};

/// How long a started authorization may take to come back.
pub const STATE_TTL: TimeDelta = TimeDelta::minutes(10);

/// The `kind` PKCE verifiers are sealed under.
pub const STATE_KIND: &str = "oauth_state";

/// The callback's path under the engine's public URL.
pub const CALLBACK_PATH: &str = "/v1/oauth/callback";

/// Why an OAuth step failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Sealing or opening failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No master key is configured.
    #[error("no master key is configured, so OAuth tokens cannot be stored")]
    NoKeyring,
    /// No connection has this name.
    #[error("connection `{0}` does not exist")]
    NotFound(String),
    /// The connection does not use the authorization code grant.
    #[error(
        "connection `{0}` is not an `oauth2_code` connection; only those are authorized through /v1/oauth"
    )]
    NotCodeFlow(String),
    /// The `state` is unknown, expired or already used, or the provider reported an error.
    #[error("{0}")]
    BadCallback(String),
    /// The token endpoint refused or failed the exchange.
    #[error("exchanging the code: {0}")]
    Token(#[from] TokenError),
    /// The stored connection is unreadable.
    #[error("the connection's stored credentials are unreadable")]
    Unreadable,
}

/// `n` random bytes, base64url without padding.
fn random_text(rng: &SystemRandom, n: usize) -> Result<String, VaultError> {
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes).map_err(|_| VaultError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256 of a `state`: what the table is keyed by.
fn digest(state: &str) -> String {
    hex::encode(sha2::Sha256::digest(state.as_bytes()))
}

/// The S256 code challenge of a verifier (RFC 7636 §4.2).
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn state_aad(workspace_id: Uuid, state_digest: &str) -> Aad {
    Aad::new(workspace_id, STATE_KIND, state_digest)
}

/// Starts authorizing connection `name`: stores a fresh state and verifier and returns the
/// provider URL to send the browser to.
pub async fn start(
    db: &DatabaseConnection,
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    name: &str,
    started_by: &str,
    public_url: &str,
) -> Result<String, OAuthError> {
    let row = crate::connections::find(db, workspace_id, name)
        .await
        .map_err(|e| match e {
            crate::connections::ConnectionError::Db(e) => OAuthError::Db(e),
            _ => OAuthError::NotFound(name.to_owned()),
        })?
        .ok_or_else(|| OAuthError::NotFound(name.to_owned()))?;
    if row.auth_type != "oauth2_code" {
        return Err(OAuthError::NotCodeFlow(name.to_owned()));
    }
    let config = OAuthConfig::from_config(&row.config).map_err(|_| OAuthError::Unreadable)?;
    let authorize_url = config
        .authorize_url
        .as_deref()
        .ok_or(OAuthError::Unreadable)?;
    let keyring = keyring.ok_or(OAuthError::NoKeyring)?;
    let rng = SystemRandom::new();
    // 32 bytes each: 43 characters, the shortest verifier RFC 7636 §4.1 allows.
    let state = random_text(&rng, 32)?;
    let verifier = zeroize::Zeroizing::new(random_text(&rng, 32)?);
    let state_digest = digest(&state);
    let redirect_uri = format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'));
    let sealed = keyring.seal(&state_aad(workspace_id, &state_digest), verifier.as_bytes())?;
    let now = Utc::now();
    oauth_state::ActiveModel {
        state_digest: Set(state_digest),
        workspace_id: Set(workspace_id),
        connection_id: Set(row.id),
        started_by: Set(started_by.to_owned()),
        redirect_uri: Set(redirect_uri.clone()),
        key_version: Set(i32::try_from(sealed.key_version).unwrap_or(i32::MAX)),
        wrapped_key: Set(sealed.wrapped_key),
        ciphertext: Set(sealed.ciphertext),
        created_at: Set(now),
        expires_at: Set(now + STATE_TTL),
    }
    .insert(db)
    .await?;
    // Abandoned flows leave rows; each start sweeps the expired ones.
    oauth_state::Entity::delete_many()
        .filter(oauth_state::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    let mut url = reqwest::Url::parse(authorize_url).map_err(|_| OAuthError::Unreadable)?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", &redirect_uri);
        if !config.scopes.is_empty() {
            q.append_pair("scope", &config.scopes.join(" "));
        }
        q.append_pair("state", &state)
            .append_pair("code_challenge", &code_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
    }
    Ok(url.into())
}

/// Finishes an authorization: consumes `state`, exchanges `code`, stores the tokens and
/// activates the connection. Returns the updated connection.
pub async fn callback(
    db: &DatabaseConnection,
    keyring: Option<&Keyring>,
    http: &connectors::http::Client,
    code: &str,
    state: &str,
) -> Result<connection::Model, OAuthError> {
    let keyring = keyring.ok_or(OAuthError::NoKeyring)?;
    let bad = || {
        OAuthError::BadCallback(
            "the `state` is unknown, expired or already used; start the authorization again"
                .to_owned(),
        )
    };
    let state_digest = digest(state);
    // Consumed first, in its own transaction: whatever happens next, this state (and the
    // code that came with it, which providers also accept once) is spent.
    let tx = db.begin().await?;
    let pending = oauth_state::Entity::find_by_id(state_digest.clone())
        .one(&tx)
        .await?
        .ok_or_else(bad)?;
    let deleted = oauth_state::Entity::delete_by_id(state_digest.clone())
        .exec(&tx)
        .await?;
    tx.commit().await?;
    // Two callbacks racing on one state: only the one whose delete removed the row goes on.
    if deleted.rows_affected != 1 || pending.expires_at < Utc::now() {
        return Err(bad());
    }
    let verifier = keyring.open(
        &state_aad(pending.workspace_id, &state_digest),
        &Sealed {
            key_version: u32::try_from(pending.key_version).unwrap_or(0),
            wrapped_key: pending.wrapped_key,
            ciphertext: pending.ciphertext,
        },
    )?;
    let verifier = std::str::from_utf8(&verifier).map_err(|_| OAuthError::Unreadable)?;
    let row = connection::Entity::find_by_id(pending.connection_id)
        .filter(connection::Column::WorkspaceId.eq(pending.workspace_id))
        .one(db)
        .await?
        .ok_or_else(bad)?;
    if row.auth_type != "oauth2_code" {
        return Err(OAuthError::NotCodeFlow(row.name));
    }
    let config = OAuthConfig::from_config(&row.config).map_err(|_| OAuthError::Unreadable)?;
    let secret = open_secret(keyring, &row)?;
    let tokens = oauth::request_token(
        http,
        &oauth::Client {
            token_url: &config.token_url,
            client_id: &config.client_id,
            client_secret: secret.client_secret.as_deref(),
        },
        &Grant::AuthorizationCode {
            code,
            redirect_uri: &pending.redirect_uri,
            code_verifier: verifier,
        },
    )
    .await?;
    let now = Utc::now();
    let expires_at = tokens.expires_at(now);
    let stored = secret.renewed(&tokens, false);
    let sealed = keyring.seal(
        &workers::connection_aad(row.workspace_id, row.id),
        stored.to_json().as_bytes(),
    )?;
    let tx = db.begin().await?;
    let details = json!({
        "connection": row.name,
        "connection_id": row.id,
        "connector": row.connector,
        "auth_type": row.auth_type,
        "scopes": row.scopes,
        "granted_scope": tokens.scope,
        "refresh_token": tokens.refresh_token.is_some(),
        "base_url_from_token": tokens.base_url_to_adopt(row.base_url.as_deref()),
    });
    let mut active: connection::ActiveModel = row.clone().into();
    if let Some(base_url) = tokens.base_url_to_adopt(row.base_url.as_deref()) {
        active.base_url = Set(Some(base_url));
    }
    active.config = Set(OAuthConfig::with_expiry(&row.config, expires_at));
    active.status = Set(ConnectionStatus::Active);
    active.key_version = Set(Some(i32::try_from(sealed.key_version).unwrap_or(i32::MAX)));
    active.wrapped_key = Set(Some(sealed.wrapped_key));
    active.ciphertext = Set(Some(sealed.ciphertext));
    active.updated_at = Set(now);
    let updated = active.update(&tx).await?;
    crate::audit::append(
        &tx,
        vec![(
            row.workspace_id,
            crate::audit::Entry::admin("connection.authorized", &pending.started_by, details),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}

fn open_secret(keyring: &Keyring, row: &connection::Model) -> Result<OAuthSecret, OAuthError> {
    let (Some(version), Some(wrapped_key), Some(ciphertext)) =
        (row.key_version, &row.wrapped_key, &row.ciphertext)
    else {
        // Revoked since the flow started.
        return Err(OAuthError::BadCallback(format!(
            "connection `{}` was revoked; set its credentials again before authorizing it",
            row.name
        )));
    };
    let opened = keyring.open(
        &workers::connection_aad(row.workspace_id, row.id),
        &Sealed {
            key_version: u32::try_from(version).unwrap_or(0),
            wrapped_key: wrapped_key.clone(),
            ciphertext: ciphertext.clone(),
        },
    )?;
    let text = std::str::from_utf8(&opened).map_err(|_| OAuthError::Unreadable)?;
    OAuthSecret::from_json(text).map_err(|_| OAuthError::Unreadable)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_s256_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            super::code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
