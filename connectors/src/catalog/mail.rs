//! Email inputs the mail connectors (Gmail, Outlook) share: recipients given as one address or
//! a list, each `ada@example.com` or `Ada Lovelace <ada@example.com>`, checked before any
//! request so a stray line break cannot add a header.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ActionError;

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    /// A single address.
    One(String),
    /// Several addresses.
    Many(Vec<String>),
}

impl Recipients {
    /// The addresses, parsed; `field` names the input in errors.
    pub fn mailboxes(&self, field: &str) -> Result<Vec<Mailbox>, ActionError> {
        match self {
            Recipients::One(one) => Ok(vec![Mailbox::parse(one, field)?]),
            Recipients::Many(many) => many
                .iter()
                .enumerate()
                .map(|(i, m)| Mailbox::parse(m, &format!("{field}[{i}]")))
                .collect(),
        }
    }
}

/// The parsed addresses of an optional recipients input (none when absent).
pub fn mailboxes(
    recipients: &Option<Recipients>,
    field: &str,
) -> Result<Vec<Mailbox>, ActionError> {
    recipients
        .as_ref()
        .map_or(Ok(Vec::new()), |r| r.mailboxes(field))
}

/// An address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Display name, e.g. `Ada Lovelace`.
    pub name: Option<String>,
    /// The address, e.g. `ada@example.com`.
    pub address: String,
}

impl Mailbox {
    /// Reads `ada@example.com`, `<ada@example.com>` or `Ada Lovelace <ada@example.com>`
    /// (the name may be quoted).
    pub fn parse(text: &str, field: &str) -> Result<Mailbox, ActionError> {
        let text = text.trim();
        if text.chars().any(char::is_control) {
            return Err(ActionError::invalid_input(
                field,
                "an address cannot hold line breaks or control characters",
            ));
        }
        let (name, address) = match (text.rfind('<'), text.strip_suffix('>')) {
            (Some(open), Some(inner)) => {
                let name = text[..open].trim().trim_matches('"').trim();
                let name = (!name.is_empty()).then(|| name.to_owned());
                (name, inner[open + 1..].trim())
            }
            _ => (None, text),
        };
        let valid = address.split('@').count() == 2
            && address.split('@').all(|part| !part.is_empty())
            && !address
                .chars()
                .any(|c| c.is_whitespace() || "<>,;:\"()[]\\".contains(c));
        if !valid {
            return Err(ActionError::invalid_input(
                field,
                format!(
                    "`{}` is not an email address",
                    address.chars().take(100).collect::<String>()
                ),
            ));
        }
        Ok(Mailbox {
            name,
            address: address.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_with_and_without_names() {
        let m = Mailbox::parse(" \"Ada Lovelace\" <ada@example.com> ", "to").expect("named");
        assert_eq!(m.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(m.address, "ada@example.com");
        let m = Mailbox::parse("ada@example.com", "to").expect("bare");
        assert_eq!(m.name, None);
        for bad in ["ada", "ada@", "a b@example.com", "x@y\r\nBcc: z@w", "<>"] {
            assert!(Mailbox::parse(bad, "to").is_err(), "{bad}");
        }
    }
}
