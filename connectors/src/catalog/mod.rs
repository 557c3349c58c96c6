//! The built-in connectors, one module each.
//!
//! Each module defines a type implementing [`crate::sdk::Connector`] whose manifest is built
//! once, and sends every request through [`crate::sdk::Call`]. Each action's inputs are a
//! `#[serde(deny_unknown_fields)]` struct whose `schemars` schema is the manifest's input
//! schema, and its output is a struct serialized with [`crate::sdk::output`], so the schema
//! served to users and agents is the shape the action really returns.

use std::sync::Arc;

use crate::sdk::Connector;

pub mod airtable;
pub mod asana;
pub mod drive;
pub mod dropbox;
pub mod excel;
mod file_support;
pub mod github;
pub mod gitlab;
pub mod gmail;
pub mod graph;
pub mod graph_files;
pub mod http;
pub mod hubspot;
pub mod jira;
pub mod mail;
pub mod onedrive;
pub mod outlook;
pub mod salesforce;
pub mod sheets;
pub mod slack;
pub mod teams;
pub mod twilio;
pub mod webhook;

/// Every built-in connector, in the order the catalog lists them.
pub fn builtin() -> Vec<Arc<dyn Connector>> {
    vec![
        // Communication
        Arc::new(slack::Slack::new()),
        Arc::new(teams::Teams::new()),
        Arc::new(gmail::Gmail::new()),
        Arc::new(outlook::Outlook::new()),
        Arc::new(twilio::Twilio::new()),
        Arc::new(webhook::Webhook::new()),
        // Files and documents
        Arc::new(drive::Drive::new()),
        Arc::new(onedrive::OneDrive::new()),
        Arc::new(dropbox::Dropbox::new()),
        // CRM and data
        Arc::new(salesforce::Salesforce::new()),
        Arc::new(hubspot::HubSpot::new()),
        Arc::new(sheets::Sheets::new()),
        Arc::new(airtable::Airtable::new()),
        Arc::new(excel::Excel::new()),
        // Project and dev tools
        Arc::new(github::GitHub::new()),
        Arc::new(gitlab::GitLab::new()),
        Arc::new(jira::Jira::new()),
        Arc::new(asana::Asana::new()),
        // Generic
        Arc::new(http::Http::new()),
    ]
}
