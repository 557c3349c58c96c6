//! Keeping credentials out of what we say: which headers carry them, and scrubbing their
//! values from text a provider sent back (servers do echo requests in their error pages).

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether a header (or query parameter) of this name likely carries a credential:
/// `authorization`, `proxy-authorization`, and any name containing `cookie`, `token`,
/// `secret`, `key`, `password` or `credential` (`x-api-key`, `set-cookie`, `x-auth-token`…).
///
/// Deliberately broad: hiding a harmless value costs little, showing a credential cannot
/// be undone.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "authorization" | "proxy-authorization")
        || ["cookie", "token", "secret", "key", "password", "credential"]
            .iter()
            .any(|word| name.contains(word))
}

/// Values that must never appear in a message, collected from a request before it is sent.
#[derive(Default, Clone)]
pub struct Secrets {
    values: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    // Printing what this holds would defeat it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

/// Shorter fragments would redact ordinary words from an excerpt; a whole value is always
/// redacted whatever its length.
const MIN_FRAGMENT_LEN: usize = 8;

impl Secrets {
    /// Remembers `value` if `name` is sensitive, along with each whitespace-separated part
    /// long enough to be a credential on its own: a server may echo the token of
    /// `Bearer <token>` without its scheme.
    pub fn note(&mut self, name: &str, value: &str) {
        if !is_sensitive(name) || value.is_empty() {
            return;
        }
        self.values.push(value.to_owned());
        let parts = value
            .split_whitespace()
            .filter(|p| p.len() >= MIN_FRAGMENT_LEN);
        self.values.extend(parts.map(str::to_owned));
    }

    /// `text` with every remembered value replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        // Longest first, so a whole value goes before a fragment of it leaves the rest behind.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
            .into_iter()
            .fold(text.to_owned(), |text, v| text.replace(v, REDACTED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_like_names_are_sensitive() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "set-cookie",
            "X-API-Key",
            "x-auth-token",
            "client_secret",
            "api_key",
            "X-Password",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["accept", "content-type", "user-agent", "traceparent", "q"] {
            assert!(!is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn scrub_removes_whole_values_and_bearer_tokens() {
        let mut s = Secrets::default();
        s.note("authorization", "Bearer sk-live-0123456789");
        s.note("x-api-key", "abc");
        s.note("accept", "application/json");
        let text =
            "got Bearer sk-live-0123456789, then sk-live-0123456789 and abc; application/json";
        assert_eq!(
            s.scrub(text),
            "got [redacted], then [redacted] and [redacted]; application/json"
        );
        assert!(!format!("{s:?}").contains("sk-live"));
    }
}
