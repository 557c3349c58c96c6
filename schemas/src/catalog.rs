//! What the validator needs to know about connectors, without depending on them.
//!
//! The connectors crate owns the manifests; it implements [`ActionCatalog`] so that
//! `schemas` can check `connector.action` names while dependencies still point one way.

/// How risky an action is; destructive actions can be put behind approvals.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
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
    /// The action's name within its connector, e.g. `post_message`.
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
///
/// It reports every connector with an empty action list, which the validator reads as
/// "any action name".
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
    // A third of the word may differ; very short words are too ambiguous to guess at.
    let limit = word.chars().count() / 3;
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions (`gmial` → `gmail`) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
        assert_eq!(suggest("gmial", ["gmail", "slack"]), Some("gmail"));
    }
}
