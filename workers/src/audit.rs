//! The audit ledger: one append-only, hash-chained record per integration call attempt and per
//! administrative change, written in the same transaction as what it records.
//!
//! Each workspace has one chain. [`append`] locks the workspace's head row (`audit_heads`,
//! `SELECT … FOR UPDATE` on PostgreSQL; SQLite has one writer), numbers the new records from
//! the head's `seq`, links each to the one before with `hash = SHA-256(prev_hash ‖ canonical
//! JSON)`, and moves the head, so several engines appending at once still build one chain.
//! Heads are locked in workspace-id order, always after any run rows, so appends never
//! deadlock with each other or with result recording. [`verify`] walks a chain and names the
//! first record whose hash does not follow.
//!
//! Inputs and outputs are redacted ([`connectors::redact`]) and bounded
//! ([`MAX_RECORDED_BYTES`]) before they are written.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use schemas::db::entities::{audit_head, audit_record};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;

/// The `prev_hash` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Largest input or output kept in a record, as JSON; larger ones are replaced by a note of
/// their size.
pub const MAX_RECORDED_BYTES: usize = 16 * 1024;

/// One record to append (the ledger numbers and hashes it).
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// What happened: `integration.call`, `connection.created`, …
    pub kind: &'static str,
    /// Who.
    pub principal: String,
    /// `run`, `api` or `tool`.
    pub via: &'static str,
    /// When.
    pub at: DateTime<Utc>,
    /// The run, step, item and attempt of a call made by a step.
    pub run_id: Option<Uuid>,
    /// Step id.
    pub step_id: Option<String>,
    /// `for_each` item.
    pub item_index: Option<i32>,
    /// Attempt number.
    pub attempt: Option<i32>,
    /// Connector.
    pub connector: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Connection used.
    pub connection_id: Option<Uuid>,
    /// `success` or `error`.
    pub outcome: &'static str,
    /// Error code.
    pub error_code: Option<String>,
    /// The provider's HTTP status.
    pub http_status: Option<i32>,
    /// Duration of the call.
    pub duration_ms: Option<i64>,
    /// Delay before the next attempt, when one was scheduled.
    pub retry_delay_ms: Option<i64>,
    /// Size of the output, in bytes of JSON.
    pub bytes: Option<i64>,
    /// Inputs (redacted when appended).
    pub input: Option<Value>,
    /// Output or error (redacted when appended).
    pub output: Option<Value>,
    /// What an administrative change touched (never a secret).
    pub details: Option<Value>,
}

impl Entry {
    /// An administrative change by an API caller.
    pub fn admin(kind: &'static str, principal: &str, details: Value) -> Entry {
        Entry {
            kind,
            principal: principal.to_owned(),
            via: "api",
            at: Utc::now(),
            outcome: "success",
            details: Some(details),
            ..Entry::default()
        }
    }
}

/// A value as recorded: redacted, and replaced by a note when too large.
pub fn recorded(value: &Value) -> Value {
    let redacted = connectors::redact::redact(value);
    let mut size = Counter(0);
    let _ = serde_json::to_writer(&mut size, &redacted);
    let size = size.0;
    if size > MAX_RECORDED_BYTES {
        json!({ "omitted": "larger than the ledger keeps", "bytes": size })
    } else {
        redacted
    }
}

/// Appends records, each to its workspace's chain, inside the caller's transaction.
pub async fn append<C: ConnectionTrait>(tx: &C, entries: Vec<(Uuid, Entry)>) -> Result<(), DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut by_workspace: BTreeMap<Uuid, Vec<Entry>> = BTreeMap::new();
    for (ws, e) in entries {
        by_workspace.entry(ws).or_default().push(e);
    }
    let mut rows = Vec::new();
    let mut heads = Vec::new();
    for (workspace_id, entries) in by_workspace {
        let (mut seq, mut prev) = lock_head(tx, workspace_id).await?;
        for e in entries {
            seq += 1;
            let mut row = audit_record::Model {
                id: Uuid::now_v7(),
                workspace_id,
                seq,
                at: e.at.trunc_subsecs(6),
                kind: e.kind.to_owned(),
                principal: e.principal,
                via: e.via.to_owned(),
                run_id: e.run_id,
                step_id: e.step_id,
                item_index: e.item_index,
                attempt: e.attempt,
                connector: e.connector,
                action: e.action,
                connection_id: e.connection_id,
                outcome: e.outcome.to_owned(),
                error_code: e.error_code,
                http_status: e.http_status,
                duration_ms: e.duration_ms,
                retry_delay_ms: e.retry_delay_ms,
                bytes: e.bytes,
                input: e.input.as_ref().map(recorded),
                output: e.output.as_ref().map(recorded),
                details: e.details.as_ref().map(recorded),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = hash_of(&row);
            prev = row.hash.clone();
            rows.push(row);
        }
        heads.push(audit_head::ActiveModel {
            workspace_id: Set(workspace_id),
            seq: Set(seq),
            hash: Set(prev),
        });
    }
    for chunk in rows.chunks(500) {
        audit_record::Entity::insert_many(chunk.iter().cloned().map(active))
            .exec_without_returning(tx)
            .await?;
    }
    for head in heads {
        audit_head::Entity::update(head).exec(tx).await?;
    }
    Ok(())
}

fn active(m: audit_record::Model) -> audit_record::ActiveModel {
    use sea_orm::ActiveModelTrait as _;
    // Every field as a value to insert, not as an unchanged one.
    audit_record::ActiveModel::from(m).reset_all()
}

/// Locks the workspace's chain head, creating it on the first append.
async fn lock_head<C: ConnectionTrait>(tx: &C, workspace_id: Uuid) -> Result<(i64, String), DbErr> {
    let find = || {
        let q = audit_head::Entity::find_by_id(workspace_id);
        if tx.get_database_backend() == DatabaseBackend::Postgres {
            q.lock_exclusive()
        } else {
            q
        }
    };
    if let Some(head) = find().one(tx).await? {
        return Ok((head.seq, head.hash));
    }
    // Two first appends at once: one inserts, the other waits on the key, then finds it.
    audit_head::Entity::insert(audit_head::ActiveModel {
        workspace_id: Set(workspace_id),
        seq: Set(0),
        hash: Set(GENESIS.to_owned()),
    })
    .on_conflict(
        OnConflict::column(audit_head::Column::WorkspaceId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(tx)
    .await?;
    let head = find()
        .one(tx)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("audit head".into()))?;
    Ok((head.seq, head.hash))
}

/// Every field of a record but its two hashes: what the hash covers.
fn hashed_fields(r: &audit_record::Model) -> Value {
    json!({
        "id": r.id,
        "workspace_id": r.workspace_id,
        "seq": r.seq,
        "at": r.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "kind": r.kind,
        "principal": r.principal,
        "via": r.via,
        "run_id": r.run_id,
        "step_id": r.step_id,
        "item_index": r.item_index,
        "attempt": r.attempt,
        "connector": r.connector,
        "action": r.action,
        "connection_id": r.connection_id,
        "outcome": r.outcome,
        "error_code": r.error_code,
        "http_status": r.http_status,
        "duration_ms": r.duration_ms,
        "retry_delay_ms": r.retry_delay_ms,
        "bytes": r.bytes,
        "input": r.input,
        "output": r.output,
        "details": r.details,
    })
}

/// `SHA-256(prev_hash ‖ "\n" ‖ canonical JSON of every other field)`, hex.
///
/// The canonical JSON is [`hashed_fields`] with keys sorted at every level; it is written
/// straight into the digest, without building it in memory first.
pub fn hash_of(r: &audit_record::Model) -> String {
    let mut digest = Digest(sha2::Sha256::new());
    digest.0.update(r.prev_hash.as_bytes());
    digest.0.update(b"\n");
    let at = r.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = Hashed {
        action: &r.action,
        at: &at,
        attempt: &r.attempt,
        bytes: &r.bytes,
        connection_id: &r.connection_id,
        connector: &r.connector,
        details: r.details.as_ref().map(Canon),
        duration_ms: &r.duration_ms,
        error_code: &r.error_code,
        http_status: &r.http_status,
        id: &r.id,
        input: r.input.as_ref().map(Canon),
        item_index: &r.item_index,
        kind: &r.kind,
        outcome: &r.outcome,
        output: r.output.as_ref().map(Canon),
        principal: &r.principal,
        retry_delay_ms: &r.retry_delay_ms,
        run_id: &r.run_id,
        seq: r.seq,
        step_id: &r.step_id,
        via: &r.via,
        workspace_id: &r.workspace_id,
    };
    // Writing into a digest cannot fail.
    let _ = serde_json::to_writer(&mut digest, &body);
    hex::encode(digest.0.finalize())
}

/// The fields [`hash_of`] covers, by reference, in sorted key order (so this serializes to
/// exactly the canonical JSON of [`hashed_fields`]).
#[derive(serde::Serialize)]
struct Hashed<'a> {
    action: &'a Option<String>,
    at: &'a str,
    attempt: &'a Option<i32>,
    bytes: &'a Option<i64>,
    connection_id: &'a Option<Uuid>,
    connector: &'a Option<String>,
    details: Option<Canon<'a>>,
    duration_ms: &'a Option<i64>,
    error_code: &'a Option<String>,
    http_status: &'a Option<i32>,
    id: &'a Uuid,
    input: Option<Canon<'a>>,
    item_index: &'a Option<i32>,
    kind: &'a str,
    outcome: &'a str,
    output: Option<Canon<'a>>,
    principal: &'a str,
    retry_delay_ms: &'a Option<i64>,
    run_id: &'a Option<Uuid>,
    seq: i64,
    step_id: &'a Option<String>,
    via: &'a str,
    workspace_id: &'a Uuid,
}

/// A JSON value serialized with object keys sorted at every level.
struct Canon<'a>(&'a Value);

impl serde::Serialize for Canon<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Canon(v))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Canon(v))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// An `io::Write` into a digest.
struct Digest(sha2::Sha256);

impl std::io::Write for Digest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An `io::Write` that only counts.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON with object keys sorted at every level, so a record hashes the same however the
/// database returns its JSON columns (PostgreSQL's `jsonb` reorders keys). [`hash_of`] writes
/// the same text without building it; this is the reference it is tested against.
#[cfg(test)]
fn canonical(v: &Value) -> String {
    use serde_json::Map;
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::with_capacity(map.len());
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record follows from the one before, and the head names the last.
    Intact {
        /// Records checked.
        records: u64,
    },
    /// The chain breaks at `seq`.
    Broken {
        /// The first record that does not follow.
        seq: i64,
        /// What is wrong.
        why: String,
    },
}

/// Walks a workspace's chain from the first record, a page at a time.
pub async fn verify<C: ConnectionTrait>(db: &C, workspace_id: Uuid) -> Result<Verdict, DbErr> {
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1i64;
    loop {
        let page = audit_record::Entity::find()
            .filter(audit_record::Column::WorkspaceId.eq(workspace_id))
            .filter(audit_record::Column::Seq.gte(expected_seq))
            .order_by_asc(audit_record::Column::Seq)
            .limit(1000)
            .all(db)
            .await?;
        if page.is_empty() {
            break;
        }
        for r in page {
            if r.seq != expected_seq {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    why: format!("record {expected_seq} is missing (next is {})", r.seq),
                });
            }
            if r.prev_hash != prev {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    why: "its prev_hash is not the hash of the record before it".into(),
                });
            }
            if hash_of(&r) != r.hash {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    why: "its contents do not match its hash (the record was changed)".into(),
                });
            }
            prev = r.hash;
            expected_seq += 1;
        }
    }
    let head = audit_head::Entity::find_by_id(workspace_id).one(db).await?;
    let last = expected_seq - 1;
    match head {
        Some(h) if h.seq != last || h.hash != prev => Ok(Verdict::Broken {
            seq: last + 1,
            why: format!(
                "the chain head says {} records, but {last} follow from the first (records were removed from the end)",
                h.seq
            ),
        }),
        None if last > 0 => Ok(Verdict::Broken {
            seq: 1,
            why: "records exist but the chain head is missing".into(),
        }),
        _ => Ok(Verdict::Intact {
            records: u64::try_from(last).unwrap_or(0),
        }),
    }
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only this run.
    pub run_id: Option<Uuid>,
    /// Only this step (with or without `run_id`).
    pub step_id: Option<String>,
    /// Only this connection.
    pub connection_id: Option<Uuid>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only `success` or `error`.
    pub outcome: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// After this `seq` (the previous page's `next_cursor`).
    pub after_seq: Option<i64>,
}

/// One page of a workspace's records, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    q: &Query,
    limit: u64,
) -> Result<Vec<audit_record::Model>, DbErr> {
    let mut find =
        audit_record::Entity::find().filter(audit_record::Column::WorkspaceId.eq(workspace_id));
    if let Some(v) = q.run_id {
        find = find.filter(audit_record::Column::RunId.eq(v));
    }
    if let Some(v) = &q.step_id {
        find = find.filter(audit_record::Column::StepId.eq(v.as_str()));
    }
    if let Some(v) = q.connection_id {
        find = find.filter(audit_record::Column::ConnectionId.eq(v));
    }
    if let Some(v) = &q.principal {
        find = find.filter(audit_record::Column::Principal.eq(v.as_str()));
    }
    if let Some(v) = &q.outcome {
        find = find.filter(audit_record::Column::Outcome.eq(v.as_str()));
    }
    if let Some(v) = q.since {
        find = find.filter(audit_record::Column::At.gte(v));
    }
    if let Some(v) = q.until {
        find = find.filter(audit_record::Column::At.lt(v));
    }
    if let Some(v) = q.after_seq {
        find = find.filter(audit_record::Column::Seq.gt(v));
    }
    find.order_by_asc(audit_record::Column::Seq)
        .limit(limit)
        .all(db)
        .await
}

/// The API view of a record: what its hash covers (less the workspace, which is the
/// caller's), with `item` for `item_index`, and both hashes.
pub fn view(r: &audit_record::Model) -> Value {
    let mut v = hashed_fields(r);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("workspace_id");
        let item = obj.remove("item_index").unwrap_or(Value::Null);
        obj.insert("item".into(), item);
        obj.insert("prev_hash".into(), Value::String(r.prev_hash.clone()));
        obj.insert("hash".into(), Value::String(r.hash.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"c":null,"d":[{"x":2,"y":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":null,"d":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn the_streamed_hash_is_the_hash_of_the_canonical_json() {
        let r = audit_record::Model {
            workspace_id: Uuid::now_v7(),
            seq: 7,
            id: Uuid::now_v7(),
            at: Utc::now().trunc_subsecs(6),
            kind: "integration.call".into(),
            principal: "ada".into(),
            via: "run".into(),
            run_id: Some(Uuid::now_v7()),
            step_id: Some("s".into()),
            item_index: None,
            attempt: Some(2),
            connector: Some("http".into()),
            action: Some("request".into()),
            connection_id: None,
            outcome: "error".into(),
            error_code: Some("timeout".into()),
            http_status: Some(504),
            duration_ms: Some(12),
            retry_delay_ms: Some(1000),
            bytes: Some(40),
            input: Some(
                json!({ "url": "https://x", "b": { "z": 1, "a": [ { "y": 2, "x": 1 } ] } }),
            ),
            output: Some(json!({ "code": "timeout", "message": "é \"quoted\"" })),
            details: None,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let mut reference = sha2::Sha256::new();
        reference.update(r.prev_hash.as_bytes());
        reference.update(b"\n");
        reference.update(canonical(&hashed_fields(&r)).as_bytes());
        assert_eq!(hash_of(&r), hex::encode(reference.finalize()));
    }

    #[test]
    fn large_values_are_replaced_by_their_size() {
        let big = json!({ "text": "x".repeat(MAX_RECORDED_BYTES) });
        let kept = recorded(&big);
        assert_eq!(kept["omitted"], "larger than the ledger keeps");
        assert!(kept["bytes"].as_u64().unwrap_or(0) > MAX_RECORDED_BYTES as u64);
        let small = json!({ "headers": { "authorization": "Bearer t" }, "n": 1 });
        assert_eq!(
            recorded(&small),
            json!({ "headers": { "authorization": "[redacted]" }, "n": 1 })
        );
    }
}
