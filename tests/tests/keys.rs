//! Master key rotation against a real engine, real workers, a real nats-server and
//! PostgreSQL: rows sealed under v1 are re-wrapped under v2 while runs keep opening them
//! (the engine its webhook secret, the workers their connections), nothing fails to decrypt,
//! a row changed meanwhile is left as it was written, and a sealed row copied into another
//! workspace opens nowhere.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use common::{Stack, WAIT, step};
use engine::connections::NewConnection;
use engine::keys::Rotated;
use engine::vault::{Aad, Keyring, Sealed, VaultError};
use hmac::{KeyInit, Mac};
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::connection::ConnectionStatus;
use schemas::db::entities::{audit_record, connection, secret};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Set, Statement, TransactionTrait,
};
use serde_json::{Value, json};
use switchyard_tests::{Backend, TestDatabase, wait_until};
use uuid::Uuid;

/// The signing secret of the webhook that starts the runs.
const HOOK_SECRET: &str = "hook-secret-4b1d-do-not-leak";
/// Connections sealed under v1 before the rotation; one more is created through the API.
const SEALED_UNDER_V1: usize = 6;
/// Secrets sealed under v1 that nothing uses, so the rotation takes many batches.
const EXTRA_SECRETS: usize = 20;

/// The bearer token of connection `crm-{n}`.
fn token(n: usize) -> String {
    format!("token-{n}-e2c94f-do-not-leak")
}

/// The key specs of a rollout: v1, `v1:…,v2:…`, and v2 alone (what is left afterwards).
fn specs() -> Result<(String, String, String)> {
    let (_, v1) = Keyring::generate()?;
    let (_, other) = Keyring::generate()?;
    let v2 = other.replacen("v1:", "v2:", 1);
    Ok((v1.clone(), format!("{v1},{v2}"), v2))
}

/// A v1 keyring, the v1+v2 keyring of the rollout, and v2 alone (what is left afterwards).
fn keyrings() -> Result<(Keyring, Keyring, Keyring)> {
    let (v1, both, v2) = specs()?;
    let both = Keyring::parse(&both)?;
    assert_eq!(both.current_version(), 2, "the highest version seals");
    Ok((Keyring::parse(&v1)?, both, Keyring::parse(&v2)?))
}

/// A provider that accepts, on `/check/{n}`, exactly the token of `crm-{n}`, logging each call.
#[derive(Default)]
struct Provider {
    calls: Mutex<Vec<(usize, String)>>,
}

impl Provider {
    fn calls(&self) -> Vec<(usize, String)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn start_provider() -> Result<(SocketAddr, Arc<Provider>)> {
    let provider = Arc::new(Provider::default());
    let app = Router::new()
        .route(
            "/check/{n}",
            get(
                |State(p): State<Arc<Provider>>, Path(n): Path<usize>, headers: HeaderMap| async move {
                    let got = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    let ok = got == token(n);
                    p.calls
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((n, got));
                    if ok {
                        (StatusCode::OK, Json(json!({ "ok": true })))
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            Json(json!({ "ok": false, "error": "invalid_auth" })),
                        )
                    }
                },
            ),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, provider))
}

/// A chain of steps, step `s{n}` calling `/check/{n}` with connection `crm-{n}`.
fn chain(name: &str, trigger: &str, addr: SocketAddr, connections: usize) -> String {
    let mut yaml = format!("name: {name}\n{trigger}steps:\n");
    for n in 0..connections {
        let needs = if n == 0 {
            String::new()
        } else {
            format!("needs: [s{}], ", n - 1)
        };
        yaml.push_str(&format!(
            "  - {{ id: s{n}, {needs}action: http.request, connection: crm-{n}, with: {{ url: \"http://{addr}/check/{n}\" }} }}\n"
        ));
    }
    yaml
}

fn new_connection(name: &str, token: &str) -> NewConnection {
    NewConnection {
        name: name.to_owned(),
        connector: "http".to_owned(),
        auth: json!({ "type": "bearer", "token": token }),
        scopes: Vec::new(),
        base_url: None,
        rate_limit: None,
    }
}

/// Starts a run through the stack's signed webhook, so the engine opens the webhook's secret.
async fn deliver(stack: &Stack, delivery: usize) -> Result<String> {
    let body = format!(r#"{{"delivery":{delivery}}}"#);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let r = stack
        .http
        .post(format!("{}/v1/hooks/crm-sync/gh", stack.api))
        .header("x-hub-signature-256", signature)
        .header("x-github-delivery", format!("delivery-{delivery}"))
        .header("x-github-event", "push")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let answer: Value = r.json().await?;
    anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {answer}");
    Ok(answer["run_id"].as_str().context("run_id")?.to_owned())
}

fn sealed_secret(row: &secret::Model) -> Sealed {
    Sealed {
        key_version: u32::try_from(row.key_version).unwrap_or(0),
        wrapped_key: row.wrapped_key.clone(),
        ciphertext: row.ciphertext.clone(),
    }
}

fn sealed_connection(row: &connection::Model) -> Result<Sealed> {
    Ok(Sealed {
        key_version: u32::try_from(row.key_version.context("sealed")?)?,
        wrapped_key: row.wrapped_key.clone().context("sealed")?,
        ciphertext: row.ciphertext.clone().context("sealed")?,
    })
}

async fn keys_rotated_records(db: &DatabaseConnection) -> Result<Vec<audit_record::Model>> {
    Ok(audit_record::Entity::find()
        .filter(audit_record::Column::Kind.eq("keys.rotated"))
        .all(db)
        .await?)
}

#[tokio::test]
async fn rotating_the_master_key_while_runs_execute_fails_no_decrypt() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let (v1, both, v2) = keyrings()?;
    // The rollout's first step is done: engine and workers hold v1 and v2, v2 seals.
    let both = Arc::new(both);
    let engine_keys = both.clone();
    let stack = Stack::start_configured(Backend::Postgres, 2, move |config| {
        config.keyring = Some(engine_keys);
    })
    .await?;
    let db = stack.db.connect().await?;
    let registry = connectors::Registry::builtin();
    let ws = DEFAULT_WORKSPACE_ID;

    // What was stored before it: sealed under v1 alone.
    engine::secrets::put(&db, Some(&v1), ws, "hook", HOOK_SECRET.as_bytes(), "test").await?;
    for i in 0..EXTRA_SECRETS {
        let value = format!("extra-value-{i}");
        engine::secrets::put(
            &db,
            Some(&v1),
            ws,
            &format!("extra-{i}"),
            value.as_bytes(),
            "test",
        )
        .await?;
    }
    for n in 0..SEALED_UNDER_V1 {
        engine::connections::create(
            &db,
            Some(&v1),
            &registry,
            ws,
            new_connection(&format!("crm-{n}"), &token(n)),
        )
        .await?;
    }
    // And through the API since: sealed under v2 already, which the rotation leaves alone.
    let r = stack
        .http
        .put(format!("{}/v1/secrets/fresh", stack.api))
        .json(&json!({ "value": "fresh-value" }))
        .send()
        .await?;
    anyhow::ensure!(r.status() == StatusCode::CREATED, "{}", r.status());
    assert_eq!(r.json::<Value>().await?["key_version"], 2);
    let api_connection = SEALED_UNDER_V1;
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({
            "name": format!("crm-{api_connection}"),
            "connector": "http",
            "auth": { "type": "bearer", "token": token(api_connection) },
        }))
        .send()
        .await?;
    anyhow::ensure!(r.status() == StatusCode::CREATED, "{}", r.status());
    let versions: Vec<Option<i32>> = connection::Entity::find()
        .all(&db)
        .await?
        .iter()
        .map(|c| c.key_version)
        .collect();
    assert_eq!(
        versions.iter().filter(|v| **v == Some(1)).count(),
        SEALED_UNDER_V1,
        "{versions:?}"
    );
    stack
        .apply(&chain(
            "crm-sync",
            "triggers:\n  - webhook: { id: gh, signature: { scheme: github, secret: hook } }\n",
            addr,
            SEALED_UNDER_V1 + 1,
        ))
        .await?;

    // Runs before the rotation open v1 rows; wait until their steps are calling.
    let mut runs = Vec::new();
    for d in 0..3 {
        runs.push(deliver(&stack, d).await?);
    }
    wait_until(
        || async { Ok::<bool, anyhow::Error>(provider.calls().len() >= 3) },
        WAIT,
    )
    .await
    .context("the first steps called the provider")?;

    // The rotation, one row per transaction, while more runs start and those run on.
    let rotation = engine::keys::rotate(&db, &both, 1);
    let during = async {
        let mut ids = Vec::new();
        for d in 3..6 {
            ids.push(deliver(&stack, d).await?);
        }
        Ok::<_, anyhow::Error>(ids)
    };
    let (rotated, during) = tokio::join!(rotation, during);
    let rotated = rotated?;
    runs.extend(during?);
    assert_eq!(
        rotated,
        Rotated {
            to_version: 2,
            secrets: 1 + EXTRA_SECRETS as u64,
            connections: SEALED_UNDER_V1 as u64,
            skipped: 0,
            remaining: 0,
            workspaces: 1,
        }
    );

    // And runs after it, opening v2 rows.
    for d in 6..9 {
        runs.push(deliver(&stack, d).await?);
    }
    for id in &runs {
        let run = stack.finished(id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let calls = provider.calls();
    assert_eq!(calls.len(), runs.len() * (SEALED_UNDER_V1 + 1));
    for (n, got) in &calls {
        assert_eq!(*got, token(*n), "call to /check/{n} had the wrong token");
    }

    // Every row is under v2 and opens without v1, to the value it had: v1 can go.
    for row in secret::Entity::find().all(&db).await? {
        assert_eq!(row.key_version, 2, "secret {}", row.name);
        let value = v2.open(&Aad::new(ws, "secret", &row.name), &sealed_secret(&row))?;
        let expected = match row.name.as_str() {
            "hook" => HOOK_SECRET.to_owned(),
            "fresh" => "fresh-value".to_owned(),
            extra => format!("extra-value-{}", extra.trim_start_matches("extra-")),
        };
        assert_eq!(value.as_slice(), expected.as_bytes(), "secret {}", row.name);
    }
    for row in connection::Entity::find().all(&db).await? {
        assert_eq!(row.key_version, Some(2), "connection {}", row.name);
        let n: usize = row.name.trim_start_matches("crm-").parse()?;
        let value = v2.open(
            &workers::connection_aad(ws, row.id),
            &sealed_connection(&row)?,
        )?;
        // A connection seals the secret part of its `auth` object.
        let value: Value = serde_json::from_slice(&value)?;
        assert_eq!(value["token"], token(n), "connection {}", row.name);
    }

    // One record for the run, and the chain still verifies.
    let records = keys_rotated_records(&db).await?;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.workspace_id, ws);
    assert_eq!(record.principal, "admin-cli");
    assert_eq!(record.via, "cli");
    assert_eq!(
        record.details,
        Some(
            json!({ "to_version": 2, "secrets": 1 + EXTRA_SECRETS, "connections": SEALED_UNDER_V1 })
        )
    );
    assert!(matches!(
        engine::audit::verify(&db, ws).await?,
        engine::audit::Verdict::Intact { .. }
    ));
    Ok(())
}

/// Waits until a statement of this database waits on a row lock.
async fn blocked_on_a_lock(db: &DatabaseConnection) -> Result<()> {
    wait_until(
        || async {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ))
                .await?
                .context("count")?;
            Ok::<bool, anyhow::Error>(row.try_get::<i64>("", "n")? > 0)
        },
        WAIT,
    )
    .await
}

#[tokio::test]
async fn a_row_resealed_during_the_rotation_is_left_alone_and_a_second_rotation_finds_nothing()
-> Result<()> {
    let (v1, both, v2) = keyrings()?;
    let test_db = TestDatabase::new(Backend::Postgres).await?;
    let db = engine::service::connect_db(test_db.url()).await?;
    let ws = DEFAULT_WORKSPACE_ID;
    let registry = connectors::Registry::builtin();
    engine::secrets::put(&db, Some(&v1), ws, "contended", b"old value", "test").await?;
    engine::connections::create(&db, Some(&v1), &registry, ws, new_connection("crm-0", "t0"))
        .await?;
    engine::connections::create(&db, Some(&v1), &registry, ws, new_connection("gone", "t1"))
        .await?;
    engine::connections::revoke(&db, ws, "gone").await?;

    // An engine still on v1 alone replaces the secret's value, and has not committed yet when
    // the rotation reaches the row.
    let contended = secret::Entity::find()
        .one(&db)
        .await?
        .context("secret row")?;
    let resealed = v1.seal(&Aad::new(ws, "secret", "contended"), b"new value")?;
    let writer = db.begin().await?;
    secret::Entity::update_many()
        .col_expr(
            secret::Column::WrappedKey,
            Expr::value(resealed.wrapped_key.clone()),
        )
        .col_expr(
            secret::Column::Ciphertext,
            Expr::value(resealed.ciphertext.clone()),
        )
        .filter(secret::Column::Id.eq(contended.id))
        .exec(&writer)
        .await?;
    let rotation = tokio::spawn({
        let (db, both) = (db.clone(), both.clone());
        async move { engine::keys::rotate(&db, &both, 1).await }
    });
    blocked_on_a_lock(&db)
        .await
        .context("the rotation waits for the writer")?;
    writer.commit().await?;
    let first = rotation.await??;
    assert_eq!(
        first,
        Rotated {
            to_version: 2,
            secrets: 0,
            connections: 1,
            skipped: 1,
            remaining: 1,
            workspaces: 1,
        },
        "the re-sealed secret is not overwritten with a wrap of its old data key"
    );

    // Run again: the secret, still under v1, moves now and keeps its new value.
    let second = engine::keys::rotate(&db, &both, 1).await?;
    assert_eq!((second.secrets, second.connections), (1, 0));
    assert_eq!((second.skipped, second.remaining), (0, 0));
    let row = secret::Entity::find_by_id(contended.id)
        .one(&db)
        .await?
        .context("secret row")?;
    assert_eq!(row.key_version, 2);
    assert_eq!(
        v2.open(&Aad::new(ws, "secret", "contended"), &sealed_secret(&row))?
            .as_slice(),
        b"new value"
    );
    let revoked = engine::connections::find(&db, ws, "gone")
        .await?
        .context("revoked row")?;
    assert_eq!(revoked.status, ConnectionStatus::Revoked);
    assert_eq!(revoked.key_version, None, "nothing to re-wrap once revoked");

    // A third run has nothing to do, and records nothing.
    let third = engine::keys::rotate(&db, &both, 100).await?;
    assert!(third.nothing_to_rotate(), "{third:?}");
    assert_eq!(third.remaining, 0);
    assert_eq!(third.workspaces, 0);
    let records = keys_rotated_records(&db).await?;
    assert_eq!(records.len(), 2, "one per run that re-wrapped something");

    // With one version only, a keyring has nothing older to re-wrap either.
    let alone = engine::keys::rotate(&db, &v2, 100).await?;
    assert!(alone.nothing_to_rotate(), "{alone:?}");
    let _ = db.close().await;
    Ok(())
}

#[tokio::test]
async fn a_row_copied_into_another_workspace_does_not_open() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let (v1, both, _) = keyrings()?;
    let v1 = Arc::new(v1);
    let engine_keys = v1.clone();
    let stack = Stack::start_configured(Backend::Postgres, 1, move |config| {
        config.keyring = Some(engine_keys);
    })
    .await?;
    let db = stack.db.connect().await?;
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({ "name": "crm-0", "connector": "http", "auth": { "type": "bearer", "token": token(0) } }))
        .send()
        .await?;
    anyhow::ensure!(r.status() == StatusCode::CREATED, "{}", r.status());
    let original = engine::connections::find(&db, DEFAULT_WORKSPACE_ID, "crm-0")
        .await?
        .context("original row")?;

    // Another workspace, and in it a connection holding the original's sealed columns.
    let (other, issued) = engine::auth::bootstrap(&db, "other", "admin").await?;
    let now = chrono::Utc::now();
    let copy_id = Uuid::now_v7();
    connection::ActiveModel {
        id: Set(copy_id),
        workspace_id: Set(other.id),
        created_at: Set(now),
        updated_at: Set(now),
        last_used_at: Set(None),
        // Every other column, sealed ones included, as a value to insert.
        ..connection::ActiveModel::from(original.clone()).reset_all()
    }
    .insert(&db)
    .await?;
    let copy = connection::Entity::find_by_id(copy_id)
        .one(&db)
        .await?
        .context("copied row")?;
    assert_eq!(copy.ciphertext, original.ciphertext);

    // A step of the other workspace using it fails, before any request, without the secret.
    let other_api = common::Api {
        url: stack.api.clone(),
        http: common::authed_client(issued.token.as_str())?,
    };
    other_api
        .apply(&chain("stolen", "", addr, 1))
        .await
        .context("the other workspace's workflow names its own `crm-0`")?;
    let (_, id) = other_api.start_run("stolen", json!({}), None).await?;
    let run = other_api.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "failed", "{run:#}");
    let failed = step(&run, "s0");
    assert_eq!(failed["error"]["code"], "internal", "{run:#}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot be opened"), "{message}");
    assert!(!run.to_string().contains(&token(0)), "{run:#}");
    assert!(provider.calls().is_empty(), "no request was made");

    // The vault says the same, whether the copy claims its own id or the original's.
    let sealed = sealed_connection(&copy)?;
    for aad in [
        workers::connection_aad(other.id, copy.id),
        workers::connection_aad(other.id, original.id),
    ] {
        assert_eq!(v1.open(&aad, &sealed), Err(VaultError::Undecryptable));
    }
    // While the original still opens where it belongs.
    let opened = v1.open(
        &workers::connection_aad(DEFAULT_WORKSPACE_ID, original.id),
        &sealed_connection(&original)?,
    )?;
    let opened: Value = serde_json::from_slice(&opened)?;
    assert_eq!(opened["token"], token(0));

    // And a rotation stops at the copy, naming the row; its batch rolls back whole.
    let failure = engine::keys::rotate(&db, &both, 100)
        .await
        .expect_err("the copy cannot be re-wrapped");
    match &failure {
        engine::keys::KeyError::Vault { table, id, source } => {
            assert_eq!(*table, engine::keys::Table::Connections);
            assert_eq!(*id, copy_id);
            assert_eq!(*source, VaultError::Undecryptable);
        }
        other => panic!("expected a vault error, got {other:?}"),
    }
    assert!(
        failure
            .to_string()
            .contains(&format!("connections row {copy_id}")),
        "{failure}"
    );
    let original = engine::connections::find(&db, DEFAULT_WORKSPACE_ID, "crm-0")
        .await?
        .context("original row")?;
    assert_eq!(original.key_version, Some(1));
    assert!(keys_rotated_records(&db).await?.is_empty());
    Ok(())
}

/// Runs `switchyard admin rotate-key` on `database_url` with the keys `spec`.
async fn rotate_key_command(database_url: &str, spec: &str) -> Result<(i32, String, String)> {
    let out = tokio::process::Command::new(common::switchyard_bin()?)
        .args(["admin", "rotate-key", "--batch", "2"])
        .env("DATABASE_URL", database_url)
        .env("SWITCHYARD_MASTER_KEY", spec)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[tokio::test]
async fn the_command_says_what_it_did_and_names_a_row_it_cannot_rewrap() -> Result<()> {
    let (v1_spec, both_spec, v2_spec) = specs()?;
    let v1 = Keyring::parse(&v1_spec)?;
    let test_db = TestDatabase::new(Backend::Postgres).await?;
    let db = engine::service::connect_db(test_db.url()).await?;
    let ws = DEFAULT_WORKSPACE_ID;
    for name in ["a", "b", "c"] {
        engine::secrets::put(&db, Some(&v1), ws, name, b"value", "test").await?;
    }

    let (code, out, err) = rotate_key_command(test_db.url(), &both_spec).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("re-wrapped 3 secret(s) and 0 connection(s) under v2 in 1 workspace(s)"),
        "{out}"
    );
    assert!(out.contains("nothing is left under v1"), "{out}");
    let (code, out, err) = rotate_key_command(test_db.url(), &both_spec).await?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("nothing to rotate"), "{out}");

    // A row under a version the keys lack: exit 1, naming the row and no key.
    engine::secrets::put(&db, Some(&v1), ws, "late", b"value", "test").await?;
    let late = secret::Entity::find()
        .filter(secret::Column::Name.eq("late"))
        .one(&db)
        .await?
        .context("late row")?;
    let (code, out, err) = rotate_key_command(test_db.url(), &v2_spec).await?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("secrets row {} cannot be re-wrapped", late.id))
            && err.contains("key v1, which is not in the configured keyring"),
        "{err}"
    );
    for (label, spec) in [("v1:", &v1_spec), ("v2:", &v2_spec)] {
        let key = spec.strip_prefix(label).context("a labelled spec")?;
        assert!(
            !out.contains(key) && !err.contains(key),
            "no key text shown"
        );
    }
    let _ = db.close().await;
    Ok(())
}
