//! Redaction of inputs and outputs before they are written anywhere people read: the audit
//! ledger stores what a call was asked and what it answered, never a credential.
//!
//! A value is replaced by [`REDACTED`] when its key names a secret (`authorization`,
//! `password`, `api_key`, `client_secret`, `*_token`, …), when it looks like a credential
//! whatever its key (`Bearer …`, `Basic …`, a JWT, the prefixes providers put on their keys:
//! `sy_`, `xoxb-`, `ghp_`, `glpat-`, `sk_live_`, `AKIA`, `ya29.` …), and, inside URLs, when a
//! query parameter's name names a secret. Connection credentials are scrubbed earlier, by the
//! worker, with [`crate::credential::scrub`]; this catches what a step put in its own inputs.

use serde_json::{Map, Value};

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// Keys whose values are secret, compared lowercase with `-` read as `_`.
const SECRET_KEYS: &[&str] = &[
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "api_key",
    "apikey",
    "x_api_key",
    "private_key",
    "signature",
    "x_hub_signature_256",
    "stripe_signature",
    "x_slack_signature",
    "webhook_signature",
];

/// Prefixes providers give their credentials.
const TOKEN_PREFIXES: &[&str] = &[
    "sy_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xapp-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "whsec_",
    "AKIA",
    "ya29.",
];

/// Whether a key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    SECRET_KEYS.contains(&k.as_str())
        || k.ends_with("_token")
        || k.ends_with("_secret")
        || k.ends_with("_password")
        || k.ends_with("_api_key")
        || k.ends_with("_apikey")
}

/// Whether a string looks like a credential, whatever key holds it.
pub fn looks_like_credential(s: &str) -> bool {
    let t = s.trim();
    let lower = t.get(..7).unwrap_or_default().to_ascii_lowercase();
    if lower.starts_with("bearer ") || lower.starts_with("basic ") {
        return true;
    }
    if TOKEN_PREFIXES
        .iter()
        .any(|p| t.starts_with(p) && t.len() >= p.len() + 8 && !t.contains(char::is_whitespace))
    {
        return true;
    }
    // A JWT: three base64url segments, the first a JSON object (`eyJ` is `{"`).
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3
        && t.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A redacted copy of `value`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact_str(s)),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let v = if is_secret_key(k) && !v.is_null() {
                    Value::String(REDACTED.to_owned())
                } else {
                    redact(v)
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `value` with the fields an action's manifest marks secret replaced by [`REDACTED`].
///
/// Each path is dotted from the top of the step's `with` (`auth.token`); a segment `[]`
/// covers every element of an array (`recipients[].pin`). A path that is absent changes
/// nothing. Applied before [`redact`], so a secret is hidden even when its key and value look
/// ordinary.
pub fn redact_paths(value: &Value, paths: &[String]) -> Value {
    let mut out = value.clone();
    for path in paths {
        let segments: Vec<&str> = path
            .split('.')
            .flat_map(|s| match s.strip_suffix("[]") {
                Some(name) if !name.is_empty() => vec![name, "[]"],
                Some(_) => vec!["[]"],
                None => vec![s],
            })
            .collect();
        hide(&mut out, &segments);
    }
    out
}

fn hide(value: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        if !value.is_null() {
            *value = Value::String(REDACTED.to_owned());
        }
        return;
    };
    match (*first, value) {
        ("[]", Value::Array(items)) => {
            for item in items {
                hide(item, rest);
            }
        }
        (key, Value::Object(map)) => {
            if let Some(v) = map.get_mut(key) {
                hide(v, rest);
            }
        }
        _ => {}
    }
}

fn redact_str(s: &str) -> String {
    if looks_like_credential(s) {
        return REDACTED.to_owned();
    }
    if s.contains("://")
        && s.contains('?')
        && let Ok(mut url) = reqwest::Url::parse(s)
    {
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if pairs.iter().any(|(k, _)| is_secret_key(k)) {
            url.query_pairs_mut()
                .clear()
                .extend_pairs(pairs.iter().map(|(k, v)| {
                    if is_secret_key(k) {
                        (k.as_str(), REDACTED)
                    } else {
                        (k.as_str(), v.as_str())
                    }
                }));
            return url.to_string();
        }
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
            return url.to_string();
        }
    }
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_keys_and_credential_looking_values_are_redacted() {
        let input = json!({
            "url": "https://api.example.com/v1/items?api_key=k3y-123&page=2",
            "headers": {
                "Authorization": "Bearer abc.def",
                "X-Api-Key": "plain",
                "Accept": "application/json",
            },
            "body": {
                "client_secret": "cs",
                "refresh_token": "rt",
                "note": "xoxb-1234567890-abcdefghij",
                "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
                "count": 3,
                "password": null,
            },
            "list": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789", "fine"],
        });
        let out = redact(&input);
        let text = out.to_string();
        for secret in [
            "k3y-123", "abc.def", "plain", "cs\"", "rt\"", "xoxb-", "eyJhbG", "ghp_",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(out["headers"]["Accept"], "application/json");
        assert_eq!(out["body"]["count"], 3);
        assert_eq!(out["body"]["password"], Value::Null);
        assert_eq!(out["list"][1], "fine");
        assert!(
            out["url"]
                .as_str()
                .is_some_and(|u| u.contains("page=2") && u.contains("api_key=%5Bredacted%5D")),
            "{out}"
        );
    }

    #[test]
    fn ordinary_values_are_kept() {
        let v = json!({ "text": "Deploy finished: 3 services", "user": "ada", "id": 42,
                        "url": "https://example.com/a?b=c", "short": "sy_x" });
        assert_eq!(redact(&v), v);
    }

    #[test]
    fn secret_fields_are_redacted_by_path_whatever_they_look_like() {
        let v = json!({
            "webhook_url": "https://hooks.example.com/T1/B2/plainlooking",
            "auth": { "pin": "1234", "user": "ada" },
            "recipients": [{ "to": "+1555", "code": "9876" }, { "to": "+1666", "code": "5432" }],
            "text": "hi",
        });
        let paths = [
            "webhook_url",
            "auth.pin",
            "recipients[].code",
            "missing.field",
        ]
        .map(str::to_owned);
        let out = redact_paths(&v, &paths);
        let text = out.to_string();
        for secret in ["plainlooking", "1234", "9876", "5432"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(out["auth"]["user"], "ada");
        assert_eq!(out["recipients"][1]["to"], "+1666");
        assert_eq!(out["text"], "hi");
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        let out = redact(&json!("https://ada:hunter2@example.com/x?q=1"));
        assert!(!out.to_string().contains("hunter2"), "{out}");
    }
}
