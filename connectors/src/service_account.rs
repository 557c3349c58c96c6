//! Service-account credentials: the JWT bearer grant of RFC 7523 §2.1, as Google uses it.
//!
//! A service account holds an RSA private key. To get an access token, the worker signs a
//! short-lived JWT (RS256) naming the account (`iss`), the scopes it wants (`scope`), the token
//! endpoint (`aud`) and, for domain-wide delegation, the user it acts for (`sub`), and posts it
//! to the token endpoint as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//! ([`crate::oauth::Grant::JwtBearer`]). The answer is an ordinary token response, read and
//! classified by [`crate::oauth`].
//!
//! Keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what Google's key files hold), signed
//! with `ring`. No error here ever quotes the key, or any part of the PEM text.

use std::fmt;

use base64::Engine as _;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use zeroize::Zeroizing;

/// Where Google issues service-account tokens; the `token_url` when none is given.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// How long an assertion is valid: Google accepts at most one hour.
pub const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Why a private key cannot be used. The messages name the problem, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `-----BEGIN …-----` / `-----END …-----` pair.
    #[error("`private_key` is not a PEM block (it must start with `-----BEGIN PRIVATE KEY-----`)")]
    NotPem,
    /// A PEM block of another kind: a PKCS#1 `RSA PRIVATE KEY`, a public key, a certificate, an
    /// encrypted key.
    #[error(
        "`private_key` is a PEM block of {0}, not an unencrypted PKCS#8 `PRIVATE KEY` (convert it with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    WrongType(&'static str),
    /// The text between the BEGIN and END lines is not base64.
    #[error("the body of `private_key` is not valid base64")]
    BadBase64,
    /// Base64 that does not decode to a usable RSA key (`ring` says why, in its own words).
    #[error("`private_key` is not a usable RSA private key in PKCS#8 form ({0})")]
    Rejected(String),
    /// Signing failed (`ring` found the system's random source unusable; it blinds with it).
    #[error("signing the service account's assertion failed")]
    SigningFailed,
}

/// An RSA key that signs assertions. `Debug` shows nothing of it.
pub struct SigningKey(RsaKeyPair);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The kind of a PEM label other than `PRIVATE KEY`, said without quoting what was given.
fn label_kind(label: &str) -> &'static str {
    match label {
        "RSA PRIVATE KEY" => "type `RSA PRIVATE KEY` (PKCS#1)",
        "ENCRYPTED PRIVATE KEY" => "type `ENCRYPTED PRIVATE KEY`",
        "EC PRIVATE KEY" => "type `EC PRIVATE KEY`",
        "PUBLIC KEY" | "RSA PUBLIC KEY" => "a public key",
        "CERTIFICATE" => "type `CERTIFICATE`",
        _ => "another type",
    }
}

/// The DER bytes of a PKCS#8 `PRIVATE KEY` PEM block.
pub fn pem_to_der(pem: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = pem.find(BEGIN).ok_or(KeyError::NotPem)?;
    let rest = &pem[start + BEGIN.len()..];
    let label_end = rest.find(DASHES).ok_or(KeyError::NotPem)?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + DASHES.len()..];
    let end_line = format!("-----END {label}-----");
    let body_end = body_and_end.find(&end_line).ok_or(KeyError::NotPem)?;
    if label != "PRIVATE KEY" {
        return Err(KeyError::WrongType(label_kind(label)));
    }
    let body: Zeroizing<String> = Zeroizing::new(
        body_and_end[..body_end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    if body.is_empty() {
        return Err(KeyError::BadBase64);
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| KeyError::BadBase64)
}

impl SigningKey {
    /// Reads a PKCS#8 PEM RSA private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_to_der(pem)?;
        RsaKeyPair::from_pkcs8(&der)
            .map(SigningKey)
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// The public key, DER `RSAPublicKey` (what a verifier checks signatures against).
    pub fn public_key_der(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.0.public_key().as_ref()
    }
}

/// What a JWT bearer assertion claims.
#[derive(Debug, Clone, Copy)]
pub struct Assertion<'a> {
    /// `iss`: the service account's email.
    pub issuer: &'a str,
    /// `aud`: the token endpoint the assertion is sent to.
    pub audience: &'a str,
    /// `scope`, sent space-separated.
    pub scopes: &'a [String],
    /// `sub`: the user to act for (domain-wide delegation).
    pub subject: Option<&'a str>,
    /// The JWT header's `kid`: which of the account's keys signed it.
    pub key_id: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
}

/// The signed assertion (`header.claims.signature`, each base64url without padding), issued at
/// `iat` (seconds since the epoch) and valid for [`ASSERTION_LIFETIME_SECS`].
pub fn sign(
    key: &SigningKey,
    claims: &Assertion<'_>,
    iat: i64,
) -> Result<Zeroizing<String>, KeyError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = Header {
        alg: "RS256",
        typ: "JWT",
        kid: claims.key_id,
    };
    let body = Claims {
        iss: claims.issuer,
        scope: claims.scopes.join(" "),
        aud: claims.audience,
        iat,
        exp: iat + ASSERTION_LIFETIME_SECS,
        sub: claims.subject,
    };
    // Serializing these structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut jwt = Zeroizing::new(format!("{}.{}", b64.encode(header), b64.encode(body)));
    let mut signature = vec![0; key.0.public().modulus_len()];
    key.0
        .sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        )
        .map_err(|_| KeyError::SigningFailed)?;
    jwt.push('.');
    jwt.push_str(&b64.encode(signature));
    Ok(jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A throwaway 2048-bit RSA key made for these tests only; it signs nothing real.
    const TEST_KEY: &str = include_str!("../../tests/fixtures/service-account-test-key.pem");

    /// The base64 body of the test key, to check that no error carries any of it.
    fn key_material() -> Vec<String> {
        TEST_KEY
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(|l| l[..16].to_owned())
            .collect()
    }

    fn assert_no_key_material(text: &str) {
        for chunk in key_material() {
            assert!(!text.contains(&chunk), "error quotes the key: {text}");
        }
    }

    #[test]
    fn the_test_key_reads_and_its_debug_shows_nothing() {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
        // Windows line ends and surrounding text are tolerated.
        let crlf = format!("\n  {}  \n", TEST_KEY.replace('\n', "\r\n"));
        assert!(SigningKey::from_pem(&crlf).is_ok());
    }

    #[test]
    fn bad_keys_say_what_is_wrong_without_quoting_the_key() {
        let body: String = TEST_KEY
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n");
        let pkcs1 =
            format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n");
        let cert = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        let odd = format!("-----BEGIN {body}-----\nAAAA\n-----END {body}-----\n");
        let garbage = TEST_KEY.replacen('M', "*", 1);
        let truncated = {
            let lines: Vec<&str> = TEST_KEY.lines().collect();
            let mut kept = vec![lines[0]];
            kept.extend(&lines[1..lines.len() / 2]);
            kept.push(lines[lines.len() - 1]);
            kept.join("\n")
        };
        let no_end = TEST_KEY.replace("-----END PRIVATE KEY-----", "");
        for (pem, expect) in [
            (body.as_str(), KeyError::NotPem),
            ("", KeyError::NotPem),
            (no_end.as_str(), KeyError::NotPem),
            (
                pkcs1.as_str(),
                KeyError::WrongType("type `RSA PRIVATE KEY` (PKCS#1)"),
            ),
            (cert.as_str(), KeyError::WrongType("type `CERTIFICATE`")),
            (odd.as_str(), KeyError::WrongType("another type")),
            (garbage.as_str(), KeyError::BadBase64),
            (
                "-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----",
                KeyError::BadBase64,
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----",
                KeyError::Rejected("InvalidEncoding".into()),
            ),
        ] {
            let e = SigningKey::from_pem(pem).unwrap_err();
            assert_eq!(e, expect);
            assert_no_key_material(&e.to_string());
            assert_no_key_material(&format!("{e:?}"));
        }
        let e = SigningKey::from_pem(&truncated).unwrap_err();
        assert!(matches!(e, KeyError::Rejected(_)), "{e:?}");
        assert_no_key_material(&e.to_string());
    }

    fn decode(part: &str) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url without padding");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn an_assertion_is_an_rs256_jwt_with_the_claims_rfc_7523_asks_for() {
        let key = SigningKey::from_pem(TEST_KEY).unwrap();
        let scopes = [
            "https://www.googleapis.com/auth/spreadsheets".to_owned(),
            "https://www.googleapis.com/auth/drive.file".to_owned(),
        ];
        let claims = Assertion {
            issuer: "robot@project.iam.gserviceaccount.com",
            audience: GOOGLE_TOKEN_URL,
            scopes: &scopes,
            subject: Some("ada@example.com"),
            key_id: Some("k-1"),
        };
        let jwt = sign(&key, &claims, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!jwt.contains('='), "no padding");
        assert_eq!(
            decode(parts[0]),
            serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "k-1" })
        );
        assert_eq!(
            decode(parts[1]),
            serde_json::json!({
                "iss": "robot@project.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.file",
                "aud": GOOGLE_TOKEN_URL,
                "iat": 1_700_000_000,
                "exp": 1_700_003_600,
                "sub": "ada@example.com",
            })
        );
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        assert_eq!(signature.len(), 256, "2048-bit key");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
        assert!(public.verify(b"something else", &signature).is_err());

        // Without a key id or a subject, neither appears.
        let plain = sign(
            &key,
            &Assertion {
                subject: None,
                key_id: None,
                ..claims
            },
            1_700_000_000,
        )
        .unwrap();
        let parts: Vec<&str> = plain.split('.').collect();
        assert!(decode(parts[0]).get("kid").is_none());
        assert!(decode(parts[1]).get("sub").is_none());
    }
}
