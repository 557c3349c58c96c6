//! Each scheme against the provider's documented example where one is published (GitHub,
//! Slack, Standard Webhooks); Stripe and the generic scheme against digests computed
//! independently of this code (Python's `hmac`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use schemas::definition::{Signature, SignatureEncoding, SignatureScheme};

use super::{Rejection, verify};

fn signature(scheme: SignatureScheme) -> Signature {
    Signature {
        scheme,
        secret: Some("hook".into()),
        secrets: Vec::new(),
        header: None,
        encoding: None,
        prefix: None,
        tolerance: None,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    map
}

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_documented_example_verifies_and_yields_the_delivery_id() {
    let h = headers(&[
        ("x-hub-signature-256", GITHUB_SIGNATURE),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ]);
    let secrets = vec![b"It's a Secret to Everybody".to_vec()];
    let verified = verify(
        &signature(SignatureScheme::Github),
        &secrets,
        &h,
        GITHUB_BODY,
        SystemTime::now(),
    );
    assert_eq!(
        verified.map(|v| v.delivery_id),
        Ok(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()))
    );
}

#[test]
fn any_of_several_secrets_is_accepted_so_secrets_can_rotate() {
    let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
    let secrets = vec![
        b"the new secret".to_vec(),
        b"It's a Secret to Everybody".to_vec(),
    ];
    let sig = signature(SignatureScheme::Github);
    assert!(verify(&sig, &secrets, &h, GITHUB_BODY, SystemTime::now()).is_ok());
    // Neither secret signed this body.
    assert_eq!(
        verify(&sig, &secrets, &h, b"Hello, World?", SystemTime::now()),
        Err(Rejection::Mismatch)
    );
}

#[test]
fn missing_and_malformed_headers_are_named() {
    let sig = signature(SignatureScheme::Github);
    let secrets = vec![b"s".to_vec()];
    assert_eq!(
        verify(&sig, &secrets, &HeaderMap::new(), b"", SystemTime::now()),
        Err(Rejection::MissingHeader("x-hub-signature-256".into()))
    );
    let h = headers(&[("x-hub-signature-256", "sha1=abc")]);
    assert!(matches!(
        verify(&sig, &secrets, &h, b"", SystemTime::now()),
        Err(Rejection::Malformed { header, .. }) if header == "x-hub-signature-256"
    ));
    let h = headers(&[("x-hub-signature-256", "sha256=not-hex")]);
    assert!(matches!(
        verify(&sig, &secrets, &h, b"", SystemTime::now()),
        Err(Rejection::Malformed { .. })
    ));
}

const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

#[test]
fn slack_documented_example_verifies_within_tolerance_only() {
    let h = headers(&[
        ("x-slack-request-timestamp", "1531420618"),
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ]);
    let sig = signature(SignatureScheme::Slack);
    let secrets = vec![b"8f742231b10e8888abcd99yyyzzz85a5".to_vec()];
    let body = SLACK_BODY.as_bytes();
    assert!(verify(&sig, &secrets, &h, body, at(1_531_420_618 + 60)).is_ok());
    assert_eq!(
        verify(&sig, &secrets, &h, body, at(1_531_420_618 + 301)),
        Err(Rejection::Stale {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn standard_webhooks_documented_example_verifies() {
    let h = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1a,ignored v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    let sig = signature(SignatureScheme::Standard);
    let secrets = vec![b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec()];
    let verified = verify(
        &sig,
        &secrets,
        &h,
        br#"{"test": 2432232314}"#,
        at(1_614_265_330),
    );
    assert_eq!(
        verified.map(|v| v.delivery_id),
        Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()))
    );
    let secrets = vec![b"whsec_***not base64***".to_vec()];
    assert!(matches!(
        verify(&sig, &secrets, &h, b"{}", at(1_614_265_330)),
        Err(Rejection::Secret(_))
    ));
}

#[test]
fn stripe_accepts_any_v1_signature_and_refuses_replays() {
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let sig = signature(SignatureScheme::Stripe);
    let secrets = vec![b"whsec_test_secret".to_vec()];
    let h = headers(&[(
        "stripe-signature",
        "t=1700000000,v1=0000000000000000000000000000000000000000000000000000000000000000,v1=c0475716eb2200f1fe97fcf35a3c05d1fd4f8ba9a07a596730c8d18bb87c0672,v0=ignored",
    )]);
    assert!(verify(&sig, &secrets, &h, body, at(1_700_000_100)).is_ok());
    assert!(matches!(
        verify(&sig, &secrets, &h, body, at(1_700_000_000 + 3_600)),
        Err(Rejection::Stale { .. })
    ));
    let h = headers(&[("stripe-signature", "v1=abcd")]);
    assert!(matches!(
        verify(&sig, &secrets, &h, body, at(1_700_000_000)),
        Err(Rejection::Malformed {
            why: "no `t=` timestamp",
            ..
        })
    ));
}

#[test]
fn generic_hmac_reads_the_configured_header_prefix_and_encoding() {
    let mut sig = signature(SignatureScheme::HmacSha256);
    sig.header = Some("X-Partner-Signature".into());
    sig.prefix = Some("sha256=".into());
    sig.encoding = Some(SignatureEncoding::Base64);
    let secrets = vec![b"partner-secret".to_vec()];
    let h = headers(&[(
        "x-partner-signature",
        "sha256=9g2VCp5otlzKBie9VFJeDE6mMGd/pbxGHi8w0Wq8a3Y=",
    )]);
    assert!(verify(&sig, &secrets, &h, br#"{"ok":true}"#, SystemTime::now()).is_ok());
    assert_eq!(
        verify(&sig, &secrets, &h, br#"{"ok":false}"#, SystemTime::now()),
        Err(Rejection::Mismatch)
    );
}

#[test]
fn a_signed_scheme_without_secrets_refuses_everything_and_none_accepts_everything() {
    let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
    assert!(matches!(
        verify(
            &signature(SignatureScheme::Github),
            &[] as &[Vec<u8>],
            &h,
            GITHUB_BODY,
            SystemTime::now()
        ),
        Err(Rejection::Secret(_))
    ));
    assert!(
        verify(
            &signature(SignatureScheme::None),
            &[] as &[Vec<u8>],
            &HeaderMap::new(),
            b"anything",
            SystemTime::now()
        )
        .is_ok()
    );
}
