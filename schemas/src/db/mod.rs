//! Database entities and migrations (SeaORM), for SQLite and PostgreSQL alike.
//!
//! Declarations only: the engine connects and runs [`migration::Migrator`] at start-up.
//! Every table that belongs to a workspace carries `workspace_id`.

pub mod entities;
pub mod migration;

use uuid::Uuid;

/// Id of the `default` workspace that the initial migration creates.
pub const DEFAULT_WORKSPACE_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);

/// A SQLite URL for a database file, created when missing.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}
