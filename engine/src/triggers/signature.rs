//! Webhook signature verification, over the raw body, before anything parses it.
//!
//! Each scheme is the provider's documented one. Digests are compared in constant time (the
//! MAC's own `verify_slice`), every configured secret is tried so a secret can be rotated
//! without downtime, and timestamped schemes refuse deliveries outside their tolerance.
//! A rejection says which header was missing or malformed, never the secret, the expected
//! digest or the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use schemas::definition::{Signature, SignatureEncoding, SignatureScheme};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How old (or how far in the future) a timestamped delivery may be, unless the trigger says.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a delivery was refused. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("the `{0}` header is missing")]
    MissingHeader(String),
    /// A header is present but not in the scheme's format.
    #[error("the `{header}` header is malformed: {why}")]
    Malformed {
        /// The header.
        header: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The delivery's timestamp is outside the tolerance (a replay, or a wrong clock).
    #[error("the delivery is {age_secs}s from now, outside the {tolerance_secs}s tolerance")]
    Stale {
        /// Distance from now, in seconds.
        age_secs: u64,
        /// Accepted distance.
        tolerance_secs: u64,
    },
    /// No secret produces the signature sent.
    #[error("the signature does not match")]
    Mismatch,
    /// The trigger names no secret, or a stored secret is unusable (e.g. not `whsec_` base64).
    #[error("the trigger's secret is not usable: {0}")]
    Secret(&'static str),
}

/// What a verified delivery tells about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The provider's delivery id, for exactly-once runs (`X-GitHub-Delivery`, `webhook-id`).
    pub delivery_id: Option<String>,
}

/// Verifies a delivery against every secret (raw bytes, as stored) of the trigger.
pub fn verify<S: AsRef<[u8]>>(
    signature: &Signature,
    secrets: &[S],
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Verified, Rejection> {
    if signature.scheme != SignatureScheme::None && secrets.is_empty() {
        return Err(Rejection::Secret("no secret is configured"));
    }
    let tolerance = signature.tolerance.map_or(DEFAULT_TOLERANCE, |t| t.get());
    match signature.scheme {
        SignatureScheme::None => Ok(Verified::default()),
        SignatureScheme::Github => {
            let sent = header(headers, "x-hub-signature-256")?;
            let digest = decode_hex(
                "x-hub-signature-256",
                strip(sent, "sha256=", "x-hub-signature-256")?,
            )?;
            any_secret(secrets, |key| matches(key, &[body], &digest))?;
            Ok(Verified {
                delivery_id: optional(headers, "x-github-delivery"),
            })
        }
        SignatureScheme::Stripe => {
            let sent = header(headers, "stripe-signature")?;
            let mut timestamp = None;
            let mut candidates = Vec::new();
            for part in sent.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => timestamp = Some(t),
                    Some(("v1", v)) => candidates.push(decode_hex("stripe-signature", v)?),
                    _ => {}
                }
            }
            let t = timestamp.ok_or(Rejection::Malformed {
                header: "stripe-signature".into(),
                why: "no `t=` timestamp",
            })?;
            if candidates.is_empty() {
                return Err(Rejection::Malformed {
                    header: "stripe-signature".into(),
                    why: "no `v1=` signature",
                });
            }
            fresh("stripe-signature", t, tolerance, now)?;
            any_secret(secrets, |key| {
                candidates
                    .iter()
                    .any(|c| matches(key, &[t.as_bytes(), b".", body], c))
            })?;
            Ok(Verified::default())
        }
        SignatureScheme::Slack => {
            let t = header(headers, "x-slack-request-timestamp")?;
            fresh("x-slack-request-timestamp", t, tolerance, now)?;
            let sent = header(headers, "x-slack-signature")?;
            let digest = decode_hex(
                "x-slack-signature",
                strip(sent, "v0=", "x-slack-signature")?,
            )?;
            any_secret(secrets, |key| {
                matches(key, &[b"v0:", t.as_bytes(), b":", body], &digest)
            })?;
            Ok(Verified::default())
        }
        SignatureScheme::Standard => {
            let id = header(headers, "webhook-id")?;
            let t = header(headers, "webhook-timestamp")?;
            fresh("webhook-timestamp", t, tolerance, now)?;
            let sent = header(headers, "webhook-signature")?;
            // A space-separated list of `v1,<base64>`; other versions are skipped.
            let candidates: Vec<Vec<u8>> = sent
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .map(|b| B64.decode(b))
                .collect::<Result<_, _>>()
                .map_err(|_| Rejection::Malformed {
                    header: "webhook-signature".into(),
                    why: "a `v1,` signature is not base64",
                })?;
            if candidates.is_empty() {
                return Err(Rejection::Malformed {
                    header: "webhook-signature".into(),
                    why: "no `v1,` signature",
                });
            }
            let keys: Vec<Vec<u8>> = secrets
                .iter()
                .map(|s| standard_key(s.as_ref()))
                .collect::<Result<_, _>>()?;
            any_secret(&keys, |key| {
                candidates
                    .iter()
                    .any(|c| matches(key, &[id.as_bytes(), b".", t.as_bytes(), b".", body], c))
            })?;
            Ok(Verified {
                delivery_id: Some(id.to_owned()),
            })
        }
        SignatureScheme::HmacSha256 => {
            let name = signature
                .header
                .as_deref()
                .unwrap_or("x-signature")
                .to_ascii_lowercase();
            let sent = header(headers, &name)?;
            let sent = match &signature.prefix {
                Some(prefix) => strip(sent, prefix, &name)?,
                None => sent,
            };
            let digest = match signature.encoding.unwrap_or(SignatureEncoding::Hex) {
                SignatureEncoding::Hex => decode_hex(&name, sent)?,
                SignatureEncoding::Base64 => {
                    B64.decode(sent).map_err(|_| Rejection::Malformed {
                        header: name.clone(),
                        why: "not base64",
                    })?
                }
            };
            any_secret(secrets, |key| matches(key, &[body], &digest))?;
            Ok(Verified {
                delivery_id: optional(headers, "idempotency-key"),
            })
        }
    }
}

/// Whether HMAC-SHA256 of the concatenated parts under `key` equals `expected`, compared in
/// constant time.
fn matches(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected).is_ok()
}

/// Tries every secret; all are tried whether or not an earlier one matched, so the time taken
/// does not tell which secret (or whether the first) matched.
fn any_secret<S: AsRef<[u8]>>(
    secrets: &[S],
    check: impl Fn(&[u8]) -> bool,
) -> Result<(), Rejection> {
    let matched = secrets
        .iter()
        .fold(false, |found, key| check(key.as_ref()) | found);
    if matched {
        Ok(())
    } else {
        Err(Rejection::Mismatch)
    }
}

/// The key of a Standard Webhooks secret: the base64 after `whsec_`.
fn standard_key(secret: &[u8]) -> Result<Vec<u8>, Rejection> {
    let text = std::str::from_utf8(secret).map_err(|_| Rejection::Secret("not text"))?;
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    B64.decode(encoded)
        .map_err(|_| Rejection::Secret("a Standard Webhooks secret is `whsec_` and base64"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    let value = headers
        .get(name)
        .ok_or_else(|| Rejection::MissingHeader(name.to_owned()))?;
    value.to_str().map_err(|_| Rejection::Malformed {
        header: name.to_owned(),
        why: "not visible ASCII",
    })
}

fn optional(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn strip<'a>(value: &'a str, prefix: &str, header: &str) -> Result<&'a str, Rejection> {
    value
        .strip_prefix(prefix)
        .ok_or_else(|| Rejection::Malformed {
            header: header.to_owned(),
            why: "the expected prefix is missing",
        })
}

fn decode_hex(header: &str, value: &str) -> Result<Vec<u8>, Rejection> {
    hex::decode(value.trim()).map_err(|_| Rejection::Malformed {
        header: header.to_owned(),
        why: "the digest is not hexadecimal",
    })
}

/// Checks a Unix-seconds timestamp against `now` and the tolerance, in both directions.
fn fresh(header: &str, value: &str, tolerance: Duration, now: SystemTime) -> Result<(), Rejection> {
    let sent: u64 = value.trim().parse().map_err(|_| Rejection::Malformed {
        header: header.to_owned(),
        why: "not a Unix timestamp in seconds",
    })?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let age = now.abs_diff(sent);
    if age > tolerance.as_secs() {
        return Err(Rejection::Stale {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
