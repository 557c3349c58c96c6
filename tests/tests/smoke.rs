//! The harness's servers work and behave as the project relies on them to.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Schema, Set};
use switchyard_tests::{Backend, NatsServer, TestDatabase, for_each_backend, wait_until};

#[tokio::test]
async fn jetstream_deduplicates_by_msg_id_and_delivers_to_a_pull_consumer() -> Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let stream = js
        .create_stream(stream::Config {
            name: "STEPS".into(),
            subjects: vec!["steps.>".into()],
            duplicate_window: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;

    // The same step message published twice, as a republish after a crash would.
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "run-1.step-1.1");
    let first = js
        .publish_with_headers("steps.http", headers.clone(), "payload-1".into())
        .await?
        .await?;
    let second = js
        .publish_with_headers("steps.http", headers, "payload-1".into())
        .await?
        .await?;
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.sequence, first.sequence);

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("workers".into()),
            ..Default::default()
        })
        .await?;
    let mut batch = consumer.fetch().max_messages(10).messages().await?;
    let message = batch
        .next()
        .await
        .context("the stream delivered nothing")?
        .map_err(anyhow::Error::from_boxed)?;
    assert_eq!(message.payload, "payload-1");
    message.ack().await.map_err(anyhow::Error::from_boxed)?;
    assert!(batch.next().await.is_none(), "the duplicate was delivered");
    Ok(())
}

#[tokio::test]
async fn nats_restart_keeps_port_and_jetstream_data() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    let js = nats.jetstream().await?;
    js.create_stream(stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        ..Default::default()
    })
    .await?;
    js.publish("events.created", "kept".into()).await?.await?;

    // A graceful restart, then a crash and restart: the stream and its message survive both,
    // and the client from before reconnects by itself.
    for crash in [false, true] {
        if crash {
            nats.kill();
        }
        nats.restart().await?;
        assert_eq!(nats.port(), port);
        wait_until(
            || async {
                let mut stream = js.get_stream("EVENTS").await?;
                anyhow::Ok(stream.info().await?.state.messages == 1)
            },
            Duration::from_secs(10),
        )
        .await
        .with_context(|| format!("crash: {crash}; server log:\n{}", nats.log()))?;
    }
    Ok(())
}

mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "note")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Creates a table from an entity, inserts rows and reads them back through sea-orm.
async fn round_trip(backend: Backend) -> Result<()> {
    let db = TestDatabase::new(backend).await?;
    let conn = db.connect().await?;
    let schema = Schema::new(conn.get_database_backend());
    conn.execute(&schema.create_table_from_entity(note::Entity))
        .await?;

    for body in ["first", "second"] {
        note::ActiveModel {
            body: Set(body.to_owned()),
            ..Default::default()
        }
        .insert(&conn)
        .await?;
    }
    let bodies: Vec<String> = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(&conn)
        .await?
        .into_iter()
        .map(|note| note.body)
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    Ok(())
}

#[tokio::test]
async fn sqlite_round_trip_through_sea_orm() -> Result<()> {
    round_trip(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_round_trip_through_sea_orm() -> Result<()> {
    round_trip(Backend::Postgres).await
}

#[tokio::test]
async fn every_test_database_starts_empty() -> Result<()> {
    // Twice per backend: the second database must not see the first one's table.
    for _ in 0..2 {
        for_each_backend(|db| async move {
            let conn = db.connect().await?;
            let schema = Schema::new(conn.get_database_backend());
            conn.execute(&schema.create_table_from_entity(note::Entity))
                .await
                .context("the table already existed")?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}
