//! The OAuth 2.0 token endpoint client (RFC 6749): the three grants Switchyard uses, sent the
//! way the RFC specifies, and the answer classified by status code and the `error` field.
//!
//! - authorization code (§4.1.3), with the PKCE `code_verifier` (RFC 7636 §4.5);
//! - client credentials (§4.4);
//! - refresh token (§6);
//! - JWT bearer (RFC 7523 §2.1), with an assertion [`crate::service_account`] signs.
//!
//! Every request is an `application/x-www-form-urlencoded` POST. A confidential client
//! authenticates with HTTP Basic (`client_secret_basic`, §2.3.1: id and secret each
//! form-encoded, then joined by `:`); a public client (no secret) sends `client_id` in the body.
//! A JWT bearer grant sends neither: the signed assertion identifies the account.
//! Errors are told apart by status and by the JSON body's `error` code (§5.2), never by text:
//! `invalid_grant` is [`TokenError::InvalidGrant`] (a person must sign in again), other §5.2
//! codes are [`TokenError::Rejected`], and 5xx, 429, timeouts and connection failures are
//! [`TokenError::Unavailable`] (worth another attempt).

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use zeroize::Zeroizing;

/// How long one token request may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// An HTTP client for token endpoints: like [`crate::http::new_client`] (held to `policy`)
/// but following no redirect (a redirected POST would become a GET, or carry the client
/// secret elsewhere).
///
/// # Panics
/// As [`crate::http::new_client`], when no `rustls` crypto provider is installed.
pub fn new_token_client(policy: crate::http::OutboundPolicy) -> crate::http::Client {
    crate::http::Client::without_redirects(policy, Duration::from_secs(5))
}

/// What to exchange for tokens.
pub enum Grant<'a> {
    /// `grant_type=authorization_code` with the PKCE verifier.
    AuthorizationCode {
        /// The code the provider returned to the callback.
        code: &'a str,
        /// The `redirect_uri` sent to the authorize endpoint (§4.1.3 requires it again).
        redirect_uri: &'a str,
        /// The PKCE `code_verifier`.
        code_verifier: &'a str,
    },
    /// `grant_type=client_credentials`.
    ClientCredentials {
        /// Scopes asked for (sent space-separated, omitted when empty).
        scopes: &'a [String],
    },
    /// `grant_type=refresh_token`.
    RefreshToken {
        /// The refresh token.
        refresh_token: &'a str,
    },
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1).
    JwtBearer {
        /// The signed JWT ([`crate::service_account::sign`]).
        assertion: &'a str,
    },
}

/// The `grant_type` of [`Grant::JwtBearer`].
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The client asking for tokens.
pub struct Client<'a> {
    /// The token endpoint.
    pub token_url: &'a str,
    /// `client_id`.
    pub client_id: &'a str,
    /// `client_secret`, for a confidential client.
    pub client_secret: Option<&'a str>,
}

impl fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Grant::AuthorizationCode { .. } => "Grant::AuthorizationCode(<redacted>)",
            Grant::ClientCredentials { .. } => "Grant::ClientCredentials",
            Grant::RefreshToken { .. } => "Grant::RefreshToken(<redacted>)",
            Grant::JwtBearer { .. } => "Grant::JwtBearer(<redacted>)",
        })
    }
}

impl fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.map(|_| "<redacted>"))
            .finish()
    }
}

/// A successful token response (§5.1).
pub struct Tokens {
    /// `access_token`.
    pub access_token: Zeroizing<String>,
    /// `expires_in`, when the provider said.
    pub expires_in: Option<Duration>,
    /// `refresh_token`, when issued (a new one means the provider rotated it).
    pub refresh_token: Option<Zeroizing<String>>,
    /// `scope`, when the provider said.
    pub scope: Option<String>,
    /// `instance_url`: the API host of the account the token is for, which some providers
    /// (Salesforce) name in the token response because every account has its own; only an
    /// absolute `http(s)` URL without credentials, query or fragment is kept.
    pub instance_url: Option<Url>,
}

impl Tokens {
    /// When the access token expires, counting `expires_in` from `now` (`None` when the
    /// provider gave no lifetime).
    pub fn expires_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.expires_in
            .and_then(|d| chrono::TimeDelta::from_std(d).ok())
            .map(|d| now + d)
    }

    /// The base URL a connection takes from this response: its [`Tokens::instance_url`],
    /// without the trailing `/`, when the connection has no base URL of its own (`current`).
    /// One set by the connection's owner is never replaced.
    pub fn base_url_to_adopt(&self, current: Option<&str>) -> Option<String> {
        if current.is_some() {
            return None;
        }
        self.instance_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .field("instance_url", &self.instance_url.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `invalid_grant` (§5.2): the code, or the refresh token, is expired, revoked or was
    /// issued to another client. Retrying cannot help; a person must authorize again.
    #[error("the token endpoint answered invalid_grant: the grant is no longer valid")]
    InvalidGrant,
    /// Another §5.2 error (`invalid_client`, `unauthorized_client`, `invalid_scope`, …) or
    /// a 4xx without one: the request or the client's credentials are wrong.
    #[error("the token endpoint refused the request ({status}{})", error.as_deref().map(|e| format!(", {e}")).unwrap_or_default())]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The §5.2 `error` code, when the body had one.
        error: Option<String>,
    },
    /// A 5xx or 429, a timeout, or no connection: worth another attempt later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// A 2xx whose body is not a bearer token response.
    #[error("the token endpoint's answer is not a bearer token response: {0}")]
    Malformed(String),
    /// The token URL is not a usable `http(s)` URL.
    #[error("the token URL is not a valid http(s) URL")]
    BadUrl,
    /// The outbound policy refuses the token URL's host; nothing was sent.
    #[error("the token URL is not allowed: {0}")]
    Refused(crate::http::Refused),
}

impl TokenError {
    /// Whether another attempt later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Unavailable(_) => true,
            TokenError::InvalidGrant
            | TokenError::Rejected { .. }
            | TokenError::Malformed(_)
            | TokenError::BadUrl
            | TokenError::Refused(_) => false,
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one value, as §2.3.1 wants for Basic.
fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The form body of a grant.
fn body(client: &Client<'_>, grant: &Grant<'_>) -> Zeroizing<String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    match grant {
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_verifier", code_verifier);
        }
        Grant::ClientCredentials { scopes } => {
            form.append_pair("grant_type", "client_credentials");
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
        }
        Grant::RefreshToken { refresh_token } => {
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token);
        }
        Grant::JwtBearer { assertion } => {
            form.append_pair("grant_type", JWT_BEARER_GRANT)
                .append_pair("assertion", assertion);
            // The assertion authenticates the account (RFC 7523 §3.1: client authentication is
            // optional, and Google takes none).
            return Zeroizing::new(form.finish());
        }
    }
    if client.client_secret.is_none() {
        // A public client identifies itself in the body (§4.1.3, §3.2.1).
        form.append_pair("client_id", client.client_id);
    }
    Zeroizing::new(form.finish())
}

/// Asks the token endpoint for tokens.
pub async fn request_token(
    http: &crate::http::Client,
    client: &Client<'_>,
    grant: &Grant<'_>,
) -> Result<Tokens, TokenError> {
    let url = reqwest::Url::parse(client.token_url).map_err(|_| TokenError::BadUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TokenError::BadUrl);
    }
    let mut req = http
        .post(url)
        .timeout(TOKEN_TIMEOUT)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body(client, grant).to_string());
    if let Some(secret) = client.client_secret {
        req = req.basic_auth(form_encode(client.client_id), Some(form_encode(secret)));
    }
    let response = http.execute(req).await.map_err(|failure| match failure {
        crate::http::Failure::Refused(refused) => TokenError::Refused(refused),
        crate::http::Failure::Timeout => TokenError::Unavailable("timed out".to_owned()),
        _ => TokenError::Unavailable("no answer (connection failed)".to_owned()),
    })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|_| TokenError::Unavailable("the answer was cut off".to_owned()))?;
    classify(
        status.as_u16(),
        &bytes[..bytes.len().min(MAX_TOKEN_RESPONSE)],
    )
}

/// Reads a token endpoint's answer: the one place its failures are classified.
pub fn classify(status: u16, body: &[u8]) -> Result<Tokens, TokenError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status == 429 || status >= 500 {
        return Err(TokenError::Unavailable(format!("HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Err(match error.as_deref() {
            Some("invalid_grant") => TokenError::InvalidGrant,
            // RFC 6749 §5.2 does not list these, but OAuth 2.1 and several providers use
            // them for a transient refusal.
            Some("temporarily_unavailable" | "server_error") => {
                TokenError::Unavailable(format!("HTTP {status}"))
            }
            _ => TokenError::Rejected { status, error },
        });
    }
    let mut json = json.ok_or_else(|| TokenError::Malformed("the body is not JSON".into()))?;
    let token_type = json.get("token_type").and_then(Value::as_str).unwrap_or("");
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed(
            "`token_type` is not `Bearer`".to_owned(),
        ));
    }
    let mut take = |field: &str| match json.get_mut(field).map(Value::take) {
        Some(Value::String(s)) if !s.is_empty() => Some(Zeroizing::new(s)),
        _ => None,
    };
    let access_token =
        take("access_token").ok_or_else(|| TokenError::Malformed("no `access_token`".into()))?;
    if reqwest::header::HeaderValue::from_str(&access_token).is_err() {
        return Err(TokenError::Malformed(
            "`access_token` holds characters a header cannot carry".into(),
        ));
    }
    let refresh_token = take("refresh_token");
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        // Some providers send it as a string.
        Some(Value::String(s)) => s.parse().ok().map(Duration::from_secs),
        _ => None,
    };
    let scope = json.get("scope").and_then(Value::as_str).map(str::to_owned);
    let instance_url = json
        .get("instance_url")
        .and_then(Value::as_str)
        .and_then(|u| Url::parse(u).ok())
        .filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.has_host()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none()
        });
    Ok(Tokens {
        access_token,
        expires_in,
        refresh_token,
        scope,
        instance_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_grant_is_told_apart_by_the_error_field_not_the_text() {
        let e = classify(
            400,
            br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap_err();
        assert_eq!(e, TokenError::InvalidGrant);
        assert!(!e.is_retryable());
        // The description mentions a grant, the code says the client is wrong.
        let e = classify(
            401,
            br#"{"error":"invalid_client","error_description":"invalid_grant"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            TokenError::Rejected {
                status: 401,
                error: Some("invalid_client".into())
            }
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn server_errors_and_throttling_are_transient() {
        for (status, body) in [
            (500, &br#"{"error":"invalid_grant"}"#[..]),
            (503, b"<html>down</html>"),
            (429, b""),
            (400, br#"{"error":"temporarily_unavailable"}"#),
        ] {
            let e = classify(status, body).unwrap_err();
            assert!(e.is_retryable(), "{status}: {e:?}");
        }
    }

    #[test]
    fn a_token_response_is_read_with_rotation_and_expiry() {
        let t = classify(
            200,
            br#"{"access_token":"at-1","token_type":"bearer","expires_in":3600,"refresh_token":"rt-2","scope":"a b"}"#,
        )
        .unwrap();
        assert_eq!(t.access_token.as_str(), "at-1");
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(t.refresh_token.as_deref().map(String::as_str), Some("rt-2"));
        assert!(!format!("{t:?}").contains("at-1"));
        assert!(!format!("{t:?}").contains("rt-2"));
        for body in [
            &br#"{"access_token":"x","token_type":"mac"}"#[..],
            br#"{"token_type":"Bearer"}"#,
            b"access_token=x",
        ] {
            assert!(matches!(classify(200, body), Err(TokenError::Malformed(_))));
        }
    }

    #[test]
    fn an_instance_url_is_kept_only_when_it_is_a_plain_http_url() {
        let with = |url: &str| {
            let body =
                format!(r#"{{"access_token":"x","token_type":"Bearer","instance_url":"{url}"}}"#);
            classify(200, body.as_bytes()).unwrap().instance_url
        };
        assert_eq!(
            with("https://acme.my.salesforce.com").map(String::from),
            Some("https://acme.my.salesforce.com/".to_owned())
        );
        for refused in [
            "ftp://acme.example.com",
            "https://user:pw@acme.example.com",
            "https://acme.example.com/?x=1",
            "not a url",
        ] {
            assert_eq!(with(refused), None, "{refused}");
        }
        let none = classify(200, br#"{"access_token":"x","token_type":"Bearer"}"#).unwrap();
        assert_eq!(none.instance_url, None);
    }

    #[test]
    fn bodies_are_form_encoded_and_public_clients_name_themselves() {
        let confidential = Client {
            token_url: "http://x/token",
            client_id: "id",
            client_secret: Some("s"),
        };
        let b = body(
            &confidential,
            &Grant::RefreshToken {
                refresh_token: "a+b/c",
            },
        );
        assert_eq!(
            b.as_str(),
            "grant_type=refresh_token&refresh_token=a%2Bb%2Fc"
        );
        let public = Client {
            client_secret: None,
            ..confidential
        };
        let b = body(
            &public,
            &Grant::ClientCredentials {
                scopes: &["read".into(), "write".into()],
            },
        );
        assert_eq!(
            b.as_str(),
            "grant_type=client_credentials&scope=read+write&client_id=id"
        );
        assert_eq!(form_encode("a b:c"), "a+b%3Ac");
        let b = body(
            &public,
            &Grant::JwtBearer {
                assertion: "h.c.s-_",
            },
        );
        assert_eq!(
            b.as_str(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=h.c.s-_",
            "no client_id: the assertion names the account"
        );
    }
}
