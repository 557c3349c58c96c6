//! Triggers: how external systems start runs.
//!
//! - [`webhook`]: `POST /v1/hooks/{workflow}/{trigger_id}`, verified by [`signature`] and
//!   limited by [`limit`].
//! - [`events`]: `POST /v1/events/{name}` and `emit` steps start workflows with a matching
//!   event trigger.
//! - [`schedule`]: cron fire times in a time zone; [`scheduler`] starts their runs.

pub mod events;
pub mod limit;
pub mod schedule;
pub mod scheduler;
pub mod signature;
pub mod webhook;
