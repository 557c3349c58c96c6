//! Triggers: how external systems start runs.
//!
//! - [`webhook`]: `POST /v1/hooks/{workflow}/{trigger_id}`, verified by [`signature`] and
//!   limited by [`limit`].
//! - [`events`]: `POST /v1/events/{name}` and `emit` steps start workflows with a matching
//!   event trigger.
//! - [`schedule`]: cron fire times in a time zone, started by the engine's scheduler.

pub mod events;
pub mod limit;
pub mod schedule;
pub mod signature;
pub mod webhook;
