//! `outbox`: messages committed with the state change that caused them, published afterwards.

use sea_orm::entity::prelude::*;

/// A message to publish.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Publication order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// NATS subject.
    pub subject: String,
    /// `Nats-Msg-Id`; unique, so a message is enqueued once.
    #[sea_orm(unique)]
    pub msg_id: String,
    /// JSON body.
    pub payload: String,
    /// Extra headers (string map).
    pub headers: Json,
    /// Enqueued at.
    pub created_at: DateTimeUtc,
    /// Always null: the relay deletes a row once JetStream has acknowledged it, so every
    /// row in the table is unsent. Kept so databases created earlier need no migration.
    pub sent_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
