//! What the validator needs to know about connectors, without depending on them.
//!
//! The connectors crate owns the manifests; it implements [`ActionCatalog`] so that
//! `schemas` can check `connector.action` names while dependencies still point one way.

/// How risky an action is; destructive actions can be put behind approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffect {
    /// Only reads.
    Read,
    /// Creates or changes things.
    Write,
    /// Deletes or irreversibly changes things.
    Destructive,
}

/// What the validator learns about one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInfo {
    /// The action's name within its connector, e.g. `chat_post_message`.
    pub name: String,
    /// What running it does to the external system.
    pub side_effect: SideEffect,
}

/// What the validator learns about one connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// The connector's name, e.g. `slack`.
    pub name: String,
    /// Whether every step using it must name a `connection`.
    pub requires_connection: bool,
    /// Its actions.
    pub actions: Vec<ActionInfo>,
}

/// A source of connector and action names.
pub trait ActionCatalog {
    /// The connector called `name`, if any.
    fn connector(&self, name: &str) -> Option<ConnectorInfo>;
    /// Every connector name, for suggestions.
    fn connector_names(&self) -> Vec<String>;
}

/// A catalog that accepts every action, for callers that validate structure only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyAction;

impl ActionCatalog for AnyAction {
    fn connector(&self, name: &str) -> Option<ConnectorInfo> {
        Some(ConnectorInfo {
            name: name.to_owned(),
            requires_connection: false,
            actions: Vec::new(),
        })
    }

    fn connector_names(&self) -> Vec<String> {
        Vec::new()
    }
}

impl AnyAction {
    /// [`AnyAction`] reports connectors with no action list; the validator treats an empty
    /// list as "any action name".
    pub const fn new() -> Self {
        AnyAction
    }
}

/// A fixed list of connectors, for tests and embedders.
#[derive(Debug, Clone, Default)]
pub struct StaticCatalog(pub Vec<ConnectorInfo>);

impl ActionCatalog for StaticCatalog {
    fn connector(&self, name: &str) -> Option<ConnectorInfo> {
        self.0.iter().find(|c| c.name == name).cloned()
    }

    fn connector_names(&self) -> Vec<String> {
        self.0.iter().map(|c| c.name.clone()).collect()
    }
}

/// The closest candidate to `word` by edit distance, when it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_strangers_do_not() {
        let names = ["needs", "action", "connection"];
        assert_eq!(suggest("nedds", names), Some("needs"));
        assert_eq!(suggest("conection", names), Some("connection"));
        assert_eq!(suggest("zzz", names), None);
    }
}
