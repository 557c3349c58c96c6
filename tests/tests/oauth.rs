//! OAuth 2.0 connections through a real engine, real workers, a real nats-server and real
//! databases, against a fake provider over real HTTP that speaks RFC 6749 and RFC 7636 as
//! written: form-encoded token requests with HTTP Basic client authentication, JSON token
//! responses, `{"error": "invalid_grant"}` with 400, S256 code challenges it checks itself,
//! and refresh tokens it rotates (an old one is refused). For service accounts it speaks RFC
//! 7523 as Google does: it verifies the JWT bearer assertion's RS256 signature against the
//! account's public key and checks its claims before it issues a token.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use common::{Stack, WAIT};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use switchyard_tests::{Backend, wait_until};

const CLIENT_ID: &str = "switchyard-test";
const CLIENT_SECRET: &str = "client-s3cret/with+chars";

/// A throwaway 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA
/// -pkeyopt rsa_keygen_bits:2048`); it belongs to no real account and signs nothing real.
const SERVICE_ACCOUNT_KEY: &str = include_str!("../fixtures/service-account-test-key.pem");
const SERVICE_ACCOUNT_EMAIL: &str = "robot@switchyard-test.iam.gserviceaccount.com";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One token request as the provider received it.
#[derive(Debug, Clone)]
struct TokenRequest {
    form: HashMap<String, String>,
}

#[derive(Default)]
struct ProviderState {
    /// Issued codes: code → (challenge, redirect_uri).
    codes: HashMap<String, (String, String)>,
    /// Whether a code exchange presented the verifier of its challenge.
    pkce_verified: bool,
    /// The one refresh token accepted (rotation spends it).
    refresh_token: Option<String>,
    /// Access tokens the API accepts.
    access_tokens: Vec<String>,
    /// `expires_in` of the next tokens issued, front first; 3600 once empty.
    expires_in: Vec<u64>,
    /// Refuse every refresh with `invalid_grant`.
    refuse_refresh: bool,
    token_requests: Vec<TokenRequest>,
    /// The bearer token of every API call.
    api_calls: Vec<String>,
    issued: u32,
    /// This provider's token endpoint, the `aud` a JWT bearer assertion must name.
    token_url: String,
    /// The scope a JWT bearer assertion must ask for.
    expected_scope: String,
    /// The header and claims of every assertion whose signature and claims checked out.
    assertions: Vec<(Value, Value)>,
    /// `instance_url` of every token response, as Salesforce names each org's API host.
    instance_url: Option<String>,
}

#[derive(Default)]
struct Provider(Mutex<ProviderState>);

impl Provider {
    fn state(&self) -> std::sync::MutexGuard<'_, ProviderState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn grants(&self, grant_type: &str) -> Vec<TokenRequest> {
        self.state()
            .token_requests
            .iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some(grant_type))
            .cloned()
            .collect()
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// The client's credentials from `Authorization: Basic`, each form-decoded (RFC 6749 §2.3.1).
fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

fn s256(verifier: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("code_challenge").is_some_and(|c| c.len() == 43);
    let (Some(redirect_uri), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if !ok {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let mut s = p.state();
    s.issued += 1;
    let code = format!("code-{}", s.issued);
    s.codes.insert(
        code.clone(),
        (q["code_challenge"].clone(), redirect_uri.clone()),
    );
    let mut location = reqwest::Url::parse(redirect_uri).expect("redirect_uri is a URL");
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    (StatusCode::FOUND, [("location", location.to_string())], "").into_response()
}

/// The public key of the test service account, as the provider holds it (DER RSAPublicKey).
fn service_account_public_key() -> Vec<u8> {
    use ring::signature::KeyPair as _;
    let body: String = SERVICE_ACCOUNT_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("the fixture is base64");
    ring::signature::RsaKeyPair::from_pkcs8(&der)
        .expect("the fixture is a PKCS#8 RSA key")
        .public_key()
        .as_ref()
        .to_vec()
}

/// Checks a JWT bearer assertion as Google does (RFC 7523 §3): an RS256 signature by the
/// account's key, the account as `iss`, this token endpoint as `aud`, the expected scope, and
/// a lifetime of one hour around now. Returns its header and claims.
fn verify_assertion(assertion: &str, token_url: &str, scope: &str) -> Option<(Value, Value)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = assertion.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let public_key = service_account_public_key();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &public_key,
    )
    .verify(
        format!("{header}.{claims}").as_bytes(),
        &b64.decode(signature).ok()?,
    )
    .ok()?;
    let header: Value = serde_json::from_slice(&b64.decode(header).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&b64.decode(claims).ok()?).ok()?;
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (claims["iat"].as_i64()?, claims["exp"].as_i64()?);
    let ok = header["alg"] == "RS256"
        && header["typ"] == "JWT"
        && claims["iss"] == SERVICE_ACCOUNT_EMAIL
        && claims["aud"] == token_url
        && claims["scope"] == scope
        && exp - iat == 3600
        && (iat - now).abs() < 60;
    ok.then_some((header, claims))
}

async fn token(State(p): State<Arc<Provider>>, headers: HeaderMap, body: String) -> Response {
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    // A JWT bearer grant authenticates with its signed assertion, not with client credentials.
    let jwt_bearer = form.get("grant_type").map(String::as_str) == Some(JWT_BEARER);
    if !jwt_bearer
        && basic_client(&headers) != Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned()))
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // Held a moment, so concurrent refreshes would overlap if the fleet let them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = p.state();
    s.token_requests.push(TokenRequest { form: form.clone() });
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let with_refresh = match field("grant_type").as_str() {
        "authorization_code" => {
            let Some((challenge, redirect_uri)) = s.codes.remove(&field("code")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if redirect_uri != field("redirect_uri") || s256(&field("code_verifier")) != challenge {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            s.pkce_verified = true;
            true
        }
        "refresh_token" => {
            if s.refuse_refresh
                || s.refresh_token.as_deref() != Some(field("refresh_token").as_str())
            {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            true
        }
        "client_credentials" => false,
        JWT_BEARER => {
            let verified = verify_assertion(&field("assertion"), &s.token_url, &s.expected_scope);
            let Some(verified) = verified else {
                // What Google answers for a bad signature or wrong claims.
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            s.assertions.push(verified);
            false
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    s.issued += 1;
    let access = format!("access-{}", s.issued);
    s.access_tokens.push(access.clone());
    let expires_in = if s.expires_in.is_empty() {
        3600
    } else {
        s.expires_in.remove(0)
    };
    let mut answer =
        json!({ "access_token": access, "token_type": "Bearer", "expires_in": expires_in });
    if let Some(instance) = &s.instance_url {
        answer["instance_url"] = json!(instance);
    }
    if with_refresh {
        let refresh = format!("refresh-{}", s.issued);
        s.refresh_token = Some(refresh.clone());
        answer["refresh_token"] = json!(refresh);
    }
    (StatusCode::OK, Json(answer)).into_response()
}

/// The bearer token of a request, or `""`.
fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

async fn api(State(p): State<Arc<Provider>>, headers: HeaderMap) -> Response {
    let token = bearer(&headers);
    let mut s = p.state();
    s.api_calls.push(token.clone());
    if s.access_tokens.last() == Some(&token) {
        (StatusCode::OK, Json(json!({ "ok": true }))).into_response()
    } else {
        oauth_error(StatusCode::UNAUTHORIZED, "invalid_token")
    }
}

/// Salesforce's `GET /services/data/v60.0/sobjects/Account/{id}`, answered with its record
/// shape for the bearer token last issued.
async fn salesforce_account(
    State(p): State<Arc<Provider>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let mut s = p.state();
    s.api_calls.push(token.clone());
    if s.access_tokens.last() != Some(&token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!([{ "message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID" }])),
        )
            .into_response();
    }
    Json(json!({
        "attributes": { "type": "Account", "url": format!("/services/data/v60.0/sobjects/Account/{id}") },
        "Id": id,
        "Name": "Acme",
    }))
    .into_response()
}

async fn start_provider() -> Result<(SocketAddr, Arc<Provider>)> {
    let provider = Arc::new(Provider::default());
    let app = Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/api", get(api))
        .route(
            "/services/data/v60.0/sobjects/Account/{id}",
            get(salesforce_account),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    provider.state().token_url = format!("http://{addr}/token");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, provider))
}

/// A client that follows no redirect, with or without the stack's admin token.
fn no_redirects(token: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()?)
}

fn location(r: &reqwest::Response) -> Result<reqwest::Url> {
    let text = r
        .headers()
        .get("location")
        .context("a Location header")?
        .to_str()?;
    Ok(reqwest::Url::parse(text)?)
}

fn query(url: &reqwest::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

async fn create(stack: &Stack, auth: Value) -> Result<Value> {
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({ "name": "crm", "connector": "http", "auth": auth }))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    ensure!(status == StatusCode::CREATED, "{status}: {body}");
    Ok(body)
}

async fn connection(stack: &Stack) -> Result<Value> {
    Ok(stack
        .http
        .get(format!("{}/v1/connections/crm", stack.api))
        .send()
        .await?
        .json()
        .await?)
}

fn code_auth(addr: SocketAddr) -> Value {
    json!({
        "type": "oauth2_code",
        "authorize_url": format!("http://{addr}/authorize"),
        "token_url": format!("http://{addr}/token"),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["contacts.read", "offline_access"],
    })
}

/// Drives `start` → the provider's authorize endpoint, and returns the callback URL the
/// provider sent the browser to, and the `start` redirect's query.
async fn to_the_callback(stack: &Stack) -> Result<(reqwest::Url, HashMap<String, String>)> {
    let admin = no_redirects(Some(&stack.token))?;
    let r = admin
        .get(format!("{}/v1/oauth/crm/start", stack.api))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::FOUND, "start: {}", r.status());
    let to_provider = location(&r)?;
    let asked = query(&to_provider);
    // The browser carries no engine token to the provider.
    let r = no_redirects(None)?.get(to_provider).send().await?;
    ensure!(r.status() == StatusCode::FOUND, "authorize: {}", r.status());
    Ok((location(&r)?, asked))
}

/// Creates an `oauth2_code` connection `crm` and authorizes it.
async fn authorized(stack: &Stack, addr: SocketAddr) -> Result<()> {
    create(stack, code_auth(addr)).await?;
    let (callback, _) = to_the_callback(stack).await?;
    let r = no_redirects(None)?.get(callback).send().await?;
    ensure!(r.status() == StatusCode::OK, "callback: {}", r.status());
    Ok(())
}

#[tokio::test]
async fn authorization_code_with_pkce_activates_the_connection_and_each_state_works_once()
-> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Postgres, 0).await?;
    let created = create(&stack, code_auth(addr)).await?;
    assert_eq!(created["status"], "pending", "{created:#}");
    assert!(!created.to_string().contains(CLIENT_SECRET));

    let (callback, asked) = to_the_callback(&stack).await?;
    assert_eq!(asked["response_type"], "code");
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(
        asked["redirect_uri"],
        format!("{}/v1/oauth/callback", stack.api)
    );
    assert_eq!(asked["scope"], "contacts.read offline_access");
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(asked["state"].len() >= 43, "{asked:?}");
    assert_ne!(asked["state"], asked["code_challenge"]);
    assert!(
        callback
            .as_str()
            .starts_with(&format!("{}/v1/oauth/callback?", stack.api))
    );

    // A wrong state is refused and changes nothing; the code is not exchanged.
    let browser = no_redirects(None)?;
    let code = query(&callback)["code"].clone();
    let mut wrong = callback.clone();
    wrong
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", "not-the-state");
    let r = browser.get(wrong).send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(connection(&stack).await?["status"], "pending");
    assert!(provider.grants("authorization_code").is_empty());

    let r = browser.get(callback.clone()).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["status"], "active");
    assert!(
        provider.state().pkce_verified,
        "the provider checked the verifier"
    );
    let exchange = &provider.grants("authorization_code")[0];
    assert_eq!(
        exchange.form["redirect_uri"],
        format!("{}/v1/oauth/callback", stack.api)
    );
    assert!(
        !exchange.form.contains_key("client_secret"),
        "Basic, not the body"
    );

    let shown = connection(&stack).await?;
    assert_eq!(shown["status"], "active", "{shown:#}");
    assert!(shown["auth"]["expires_at"].is_string(), "{shown:#}");
    for secret in [CLIENT_SECRET, "access-", "refresh-"] {
        assert!(!shown.to_string().contains(secret), "{shown:#}");
    }

    // The same state again: refused, nothing exchanged.
    let r = browser.get(callback).send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(provider.grants("authorization_code").len(), 1);

    let audit = stack
        .http
        .get(format!("{}/v1/audit", stack.api))
        .send()
        .await?
        .text()
        .await?;
    assert!(audit.contains("connection.authorized"), "{audit}");
    assert!(!audit.contains("access-") && !audit.contains(CLIENT_SECRET));

    // Only admins start flows; the callback alone needs no token.
    let r = no_redirects(None)?
        .get(format!("{}/v1/oauth/crm/start", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

fn fan_out(addr: SocketAddr, name: &str, items: usize) -> String {
    let list: Vec<String> = (0..items).map(|i| i.to_string()).collect();
    format!(
        "name: {name}\nsteps:\n  - {{ id: each, for_each: [{}], max_parallel: {items}, action: http.request, connection: crm, with: {{ url: \"http://{addr}/api\" }} }}\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_once_for_twenty_concurrent_steps() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Postgres, 3).await?;
    // The first access token is already inside the refresh window.
    provider.state().expires_in = vec![30];
    authorized(&stack, addr).await?;
    stack.apply(&fan_out(addr, "fan", 20)).await?;
    let (_, id) = stack.start_run("fan", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");

    assert_eq!(
        provider.grants("refresh_token").len(),
        1,
        "exactly one refresh"
    );
    let newest = {
        let s = provider.state();
        let newest = s.access_tokens.last().cloned().unwrap_or_default();
        assert_eq!(s.api_calls.len(), 20);
        assert!(
            s.api_calls.iter().all(|t| *t == newest),
            "every call used the refreshed token: {:?}",
            s.api_calls
        );
        newest
    };
    // The one call to the token endpoint is in the ledger, with no token in it.
    let requests = token_requests(&stack).await?;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["outcome"], "success");
    assert_eq!(requests[0]["details"]["grant"], "refresh_token");
    assert!(!newest.is_empty());
    assert!(
        !serde_json::to_string(&requests)?.contains(&newest),
        "{requests:#?}"
    );
    Ok(())
}

/// The ledger's records of calls to the connection's token endpoint.
async fn token_requests(stack: &Stack) -> Result<Vec<Value>> {
    let page: Value = stack
        .http
        .get(format!("{}/v1/audit?connection=crm&limit=500", stack.api))
        .send()
        .await?
        .json()
        .await?;
    Ok(page["records"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| r["kind"] == "connection.token_requested")
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn a_rotated_refresh_token_is_the_one_sent_next() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Postgres, 1).await?;
    // Every token expires inside the refresh window, so each run refreshes.
    provider.state().expires_in = vec![30, 30, 30];
    authorized(&stack, addr).await?;
    stack.apply(&fan_out(addr, "one", 1)).await?;
    for _ in 0..2 {
        let (_, id) = stack.start_run("one", json!({}), None).await?;
        let run = stack.finished(&id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let sent: Vec<String> = provider
        .grants("refresh_token")
        .iter()
        .map(|r| r.form["refresh_token"].clone())
        .collect();
    // The code exchange issued refresh-2 (code-1 was the first thing issued); the first
    // refresh rotated it to refresh-3.
    assert_eq!(sent, ["refresh-2", "refresh-3"]);
    Ok(())
}

#[tokio::test]
async fn invalid_grant_pauses_the_run_until_the_connection_is_authorized_again() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Postgres, 1).await?;
    provider.state().expires_in = vec![30];
    authorized(&stack, addr).await?;
    provider.state().refuse_refresh = true;
    stack.apply(&fan_out(addr, "one", 1)).await?;
    let (_, id) = stack.start_run("one", json!({}), None).await?;

    // The run waits, with the reason on the step, instead of failing.
    wait_until(
        || async {
            let run = stack.run(&id).await?;
            Ok::<bool, anyhow::Error>(run["status"] == "waiting")
        },
        WAIT,
    )
    .await
    .context("the run waits")?;
    let run = stack.run(&id).await?;
    let parked = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["error"].is_object()))
        .cloned()
        .context("the step that waits")?;
    assert_eq!(parked["error"]["code"], "needs_reauth", "{run:#}");
    assert_eq!(parked["status"], "retry_wait", "{run:#}");
    assert_eq!(connection(&stack).await?["status"], "needs_reauth");
    assert!(
        provider.state().api_calls.is_empty(),
        "no request reached the API"
    );
    assert_eq!(provider.grants("refresh_token").len(), 1, "not retried");
    let requests = token_requests(&stack).await?;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["error_code"], "needs_reauth");
    // `connection.needs_reauth` was raised once, naming the connection and the run.
    let db = stack.db.connect().await?;
    let raised = schemas::db::entities::event::Entity::find()
        .filter(schemas::db::entities::event::Column::Name.eq("connection.needs_reauth"))
        .all(&db)
        .await?;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].data["connection"], "crm");
    assert_eq!(raised[0].data["run_id"], json!(id));

    // A person signs in again: the run resumes by itself and finishes.
    provider.state().refuse_refresh = false;
    let (callback, _) = to_the_callback(&stack).await?;
    let r = no_redirects(None)?.get(callback).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(connection(&stack).await?["status"], "active");
    assert_eq!(
        provider.state().api_calls.len(),
        1,
        "one call, after re-authorization"
    );
    Ok(())
}

#[tokio::test]
async fn client_credentials_obtain_a_token_and_use_it() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Sqlite, 1).await?;
    let created = create(
        &stack,
        json!({
            "type": "oauth2_client",
            "token_url": format!("http://{addr}/token"),
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["reports.read"],
        }),
    )
    .await?;
    assert_eq!(created["status"], "active");
    stack.apply(&fan_out(addr, "one", 1)).await?;
    for _ in 0..2 {
        let (_, id) = stack.start_run("one", json!({}), None).await?;
        let run = stack.finished(&id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let grants = provider.grants("client_credentials");
    assert_eq!(grants.len(), 1, "the token is reused while it is valid");
    assert_eq!(grants[0].form["scope"], "reports.read");
    {
        let s = provider.state();
        assert_eq!(s.api_calls, vec![s.access_tokens[0].clone(); 2]);
    }
    let shown = connection(&stack).await?;
    assert!(shown["auth"]["expires_at"].is_string(), "{shown:#}");
    assert!(!shown.to_string().contains("access-"));
    Ok(())
}

#[tokio::test]
async fn a_service_account_signs_a_jwt_and_its_token_is_used() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let scopes = [
        "https://www.googleapis.com/auth/spreadsheets",
        "https://www.googleapis.com/auth/drive.file",
    ];
    provider.state().expected_scope = scopes.join(" ");
    let stack = Stack::start_with_workers(Backend::Postgres, 1).await?;
    let key_lines: Vec<&str> = SERVICE_ACCOUNT_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    // A PKCS#1 key is refused when the connection is created, without being quoted.
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({ "name": "crm", "connector": "http", "auth": {
            "type": "service_account",
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "private_key": SERVICE_ACCOUNT_KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
            "scopes": scopes,
        } }))
        .send()
        .await?;
    let status = r.status();
    let refused = r.text().await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused.contains("PKCS#8"), "{refused}");
    assert!(key_lines.iter().all(|l| !refused.contains(l)), "{refused}");

    let created = create(
        &stack,
        json!({
            "type": "service_account",
            "token_url": format!("http://{addr}/token"),
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "private_key": SERVICE_ACCOUNT_KEY,
            "private_key_id": "test-key-1",
            "scopes": scopes,
            "subject": "ada@example.com",
        }),
    )
    .await?;
    assert_eq!(created["status"], "active", "{created:#}");
    assert_eq!(created["auth_type"], "service_account");
    assert_eq!(created["auth"]["client_email"], SERVICE_ACCOUNT_EMAIL);
    assert!(!created.to_string().contains("PRIVATE KEY"), "{created:#}");

    stack.apply(&fan_out(addr, "one", 1)).await?;
    for _ in 0..2 {
        let (_, id) = stack.start_run("one", json!({}), None).await?;
        let run = stack.finished(&id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }

    let grants = provider.grants(JWT_BEARER);
    assert_eq!(grants.len(), 1, "the token is reused while it is valid");
    assert_eq!(
        grants[0]
            .form
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["assertion", "grant_type"].into(),
        "no client_id or secret: the assertion names the account"
    );
    {
        let s = provider.state();
        assert_eq!(
            s.assertions.len(),
            1,
            "the signature and claims checked out"
        );
        let (header, claims) = &s.assertions[0];
        assert_eq!(header["kid"], "test-key-1");
        assert_eq!(claims["sub"], "ada@example.com");
        assert_eq!(s.api_calls, vec![s.access_tokens[0].clone(); 2]);
    }

    let shown = connection(&stack).await?;
    assert!(shown["auth"]["expires_at"].is_string(), "{shown:#}");
    for secret in ["PRIVATE KEY", "access-", key_lines[1]] {
        assert!(!shown.to_string().contains(secret), "{shown:#}");
    }
    Ok(())
}

#[tokio::test]
async fn a_salesforce_connection_takes_its_instance_url_from_the_token_response() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    // The org's API host, as Salesforce names it next to the token.
    provider.state().instance_url = Some(format!("http://{addr}"));
    let stack = Stack::start_with_workers(Backend::Sqlite, 1).await?;
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({
            "name": "org",
            "connector": "salesforce",
            "scopes": ["api"],
            "auth": {
                "type": "oauth2_client",
                "token_url": format!("http://{addr}/token"),
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["api"],
            },
        }))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED, "{}", r.text().await?);
    stack
        .apply(
            "name: account\nsteps:\n  - { id: read, action: salesforce.get_record, connection: org, with: { object: Account, id: 001xx000003DGb2AAG } }\n",
        )
        .await?;
    let (_, id) = stack.start_run("account", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(provider.grants("client_credentials").len(), 1);
    assert_eq!(
        provider.state().api_calls.len(),
        1,
        "the record was read at the instance"
    );

    // Kept on the connection, so the next steps go there without a token request.
    let shown: Value = stack
        .http
        .get(format!("{}/v1/connections/org", stack.api))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(shown["base_url"], format!("http://{addr}"), "{shown:#}");
    let (_, id) = stack.start_run("account", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(provider.grants("client_credentials").len(), 1);
    assert_eq!(provider.state().api_calls.len(), 2);
    Ok(())
}
