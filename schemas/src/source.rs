//! YAML and JSON source text → a JSON value plus the position of every node.
//!
//! Definitions arrive from people (files, API bodies), so every later problem — an unknown
//! step id three levels down, a bad cron expression — must still point at a line and column.
//! A serde deserializer forgets positions, so this module walks the parser's event stream
//! itself and records where each node starts, keyed by the same path syntax the validator
//! reports (`steps[2].needs[0]`).
//!
//! JSON is (for our purposes) a subset of YAML's flow style, so both go through one parser
//! and both get positions.
//!
//! The walk is iterative and bounded: document size, nesting depth, node count (aliases are
//! expanded and count against the same budget, which defeats "billion laughs" documents) and
//! scalar length are all capped, and exceeding a cap is an ordinary error, never a panic or an
//! unbounded allocation.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Pos {
    /// The start of the document.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Bounds on what a single document may cost to parse.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes in the document after expanding aliases.
    pub max_nodes: usize,
    /// Longest single scalar, in bytes.
    pub max_scalar_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 100_000,
            max_scalar_bytes: 256 * 1024,
        }
    }
}

/// Why source text could not be turned into a [`Document`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the problem was found.
    pub pos: Pos,
    /// What is wrong, for a person.
    pub message: String,
}

/// Parsed source: the value and where each of its nodes came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as plain JSON.
    pub value: Value,
    positions: HashMap<String, Pos>,
}

impl Document {
    /// Position of the node at `path` (e.g. `steps[2].needs[0]`), or of its nearest ancestor
    /// that has one, so every problem can be located even when it names a missing node.
    pub fn pos(&self, path: &str) -> Pos {
        let mut candidate = path;
        loop {
            if let Some(pos) = self.positions.get(candidate) {
                return *pos;
            }
            match parent_path(candidate) {
                Some(parent) => candidate = parent,
                None => return self.positions.get("").copied().unwrap_or(Pos::START),
            }
        }
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Appends a mapping key to a path in the validator's syntax.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a sequence index to a path in the validator's syntax.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Parses YAML (or JSON) text into a [`Document`] with default [`Limits`].
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    parse_with_limits(text, Limits::default())
}

/// Parses YAML (or JSON) text into a [`Document`].
pub fn parse_with_limits(text: &str, limits: Limits) -> Result<Document, SyntaxError> {
    if text.len() > limits.max_bytes {
        return Err(SyntaxError {
            pos: Pos::START,
            message: format!(
                "document is {} bytes; the limit is {} bytes",
                text.len(),
                limits.max_bytes
            ),
        });
    }
    Builder::new(limits).run(text)
}

/// A container being filled while events stream in.
enum Open {
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        path: String,
        entries: Map<String, Value>,
        /// The key read but whose value has not arrived yet, and where it was.
        pending_key: Option<String>,
        pending_key_pos: Pos,
        anchor: usize,
    },
}

struct Builder {
    limits: Limits,
    stack: Vec<Open>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<String, Pos>,
    nodes: usize,
    root: Option<Value>,
    documents: usize,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            positions: HashMap::new(),
            nodes: 0,
            root: None,
            documents: 0,
        }
    }

    fn run(mut self, text: &str) -> Result<Document, SyntaxError> {
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| SyntaxError {
                pos: Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: describe_scan_error(e.info()),
            })?;
            let pos = Pos::from_span(&span);
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => {}
                Event::DocumentStart(_) => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return Err(SyntaxError {
                            pos,
                            message: "expected one document, found a second `---` document".into(),
                        });
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    if text.len() > self.limits.max_scalar_bytes {
                        return Err(SyntaxError {
                            pos,
                            message: format!(
                                "a scalar of {} bytes exceeds the limit of {} bytes",
                                text.len(),
                                self.limits.max_scalar_bytes
                            ),
                        });
                    }
                    let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                    let value = resolve_scalar(&text, style, tag.as_deref(), pos)?;
                    self.count(1, pos)?;
                    if anchor != 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    self.push_value(value, pos)?;
                }
                Event::Alias(anchor) => {
                    let Some(value) = self.anchors.get(&anchor).cloned() else {
                        return Err(SyntaxError {
                            pos,
                            message: "alias refers to an anchor that is not defined before it"
                                .into(),
                        });
                    };
                    self.count(count_nodes(&value), pos)?;
                    self.push_value(value, pos)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    reject_tag(
                        tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                        "!!seq",
                        pos,
                    )?;
                    self.count(1, pos)?;
                    let path = self.open_child(pos, true)?;
                    self.stack.push(Open::Seq {
                        path,
                        items: Vec::new(),
                        anchor,
                    });
                }
                Event::MappingStart(anchor, tag) => {
                    reject_tag(
                        tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                        "!!map",
                        pos,
                    )?;
                    self.count(1, pos)?;
                    let path = self.open_child(pos, true)?;
                    self.stack.push(Open::Map {
                        path,
                        entries: Map::new(),
                        pending_key: None,
                        pending_key_pos: pos,
                        anchor,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (value, anchor) = match self.stack.pop() {
                        Some(Open::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                        Some(Open::Map {
                            entries, anchor, ..
                        }) => (Value::Object(entries), anchor),
                        None => {
                            return Err(SyntaxError {
                                pos,
                                message: "unbalanced collection end".into(),
                            });
                        }
                    };
                    if anchor != 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    self.attach(value, pos)?;
                }
            }
        }
        let value = self.root.take().unwrap_or(Value::Null);
        self.positions.entry(String::new()).or_insert(Pos::START);
        Ok(Document {
            value,
            positions: self.positions,
        })
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "document has more than {} nodes (aliases count once per use)",
                    self.limits.max_nodes
                ),
            });
        }
        Ok(())
    }

    /// The path a new child of the innermost open container will have, recording its position.
    ///
    /// A mapping or sequence under a key is located at its key: a block collection starts on
    /// the next line, and a person reads `retry:` as where the retry policy is.
    fn open_child(&mut self, pos: Pos, container: bool) -> Result<String, SyntaxError> {
        if container && self.stack.len() >= self.limits.max_depth {
            return Err(SyntaxError {
                pos,
                message: format!("nesting is deeper than {} levels", self.limits.max_depth),
            });
        }
        let path = match self.stack.last() {
            None => String::new(),
            Some(Open::Seq { path, items, .. }) => join_index(path, items.len()),
            Some(Open::Map {
                path,
                pending_key,
                pending_key_pos,
                ..
            }) => match pending_key {
                Some(key) => {
                    let path = join_key(path, key);
                    if container {
                        self.positions.insert(path.clone(), *pending_key_pos);
                        return Ok(path);
                    }
                    path
                }
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "mapping keys must be plain strings, not mappings or sequences"
                            .into(),
                    });
                }
            },
        };
        self.positions.insert(path.clone(), pos);
        Ok(path)
    }

    /// A scalar or alias arrives: it is either a key, a value, or the whole document.
    fn push_value(&mut self, value: Value, pos: Pos) -> Result<(), SyntaxError> {
        if let Some(Open::Map {
            path,
            entries,
            pending_key,
            pending_key_pos,
            ..
        }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            let key = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => {
                    return Err(SyntaxError {
                        pos,
                        message: "mapping key is empty".into(),
                    });
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(SyntaxError {
                        pos,
                        message: "mapping keys must be plain strings, not mappings or sequences"
                            .into(),
                    });
                }
            };
            if entries.contains_key(&key) {
                let first = self.positions.get(&join_key(path, &key)).copied();
                return Err(SyntaxError {
                    pos,
                    message: match first {
                        Some(first) => format!(
                            "duplicate key `{key}` (first defined at line {})",
                            first.line
                        ),
                        None => format!("duplicate key `{key}`"),
                    },
                });
            }
            *pending_key = Some(key);
            *pending_key_pos = pos;
            return Ok(());
        }
        self.open_child(pos, false)?;
        self.attach(value, pos)
    }

    /// A finished value goes into its parent (or becomes the root).
    fn attach(&mut self, value: Value, pos: Pos) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Open::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => {
                    entries.insert(key, value);
                    Ok(())
                }
                None => Err(SyntaxError {
                    pos,
                    message: "mapping keys must be plain strings, not mappings or sequences".into(),
                }),
            },
        }
    }
}

fn count_nodes(value: &Value) -> usize {
    // Iterative so that a deep alias target cannot overflow the stack while being measured.
    let mut total = 0usize;
    let mut todo = vec![value];
    while let Some(v) = todo.pop() {
        total += 1;
        match v {
            Value::Array(items) => todo.extend(items.iter()),
            Value::Object(map) => todo.extend(map.values()),
            _ => {}
        }
    }
    total
}

fn reject_tag(tag: Option<String>, allowed: &str, pos: Pos) -> Result<(), SyntaxError> {
    match tag {
        None => Ok(()),
        Some(t) if t == allowed || t == format!("tag:yaml.org,2002:{}", &allowed[2..]) => Ok(()),
        Some(t) => Err(SyntaxError {
            pos,
            message: format!("YAML tag `{t}` is not supported here"),
        }),
    }
}

/// YAML 1.2 core schema resolution of one scalar.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&str>,
    pos: Pos,
) -> Result<Value, SyntaxError> {
    let tag = tag.map(|t| {
        t.strip_prefix("tag:yaml.org,2002:")
            .map_or(t.to_owned(), |s| format!("!!{s}"))
    });
    match tag.as_deref() {
        None => {}
        Some("!!str") => return Ok(Value::String(text.to_owned())),
        Some("!!null") => return Ok(Value::Null),
        Some("!!bool") => {
            return plain_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| SyntaxError {
                    pos,
                    message: format!("`{text}` is not a boolean"),
                });
        }
        Some("!!int") => {
            return plain_int(text).ok_or_else(|| SyntaxError {
                pos,
                message: format!("`{text}` is not an integer"),
            });
        }
        Some("!!float") => {
            return plain_float(text, pos)?.ok_or_else(|| SyntaxError {
                pos,
                message: format!("`{text}` is not a number"),
            });
        }
        Some(other) => {
            return Err(SyntaxError {
                pos,
                message: format!("YAML tag `{other}` is not supported"),
            });
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = plain_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = plain_int(text) {
        return Ok(n);
    }
    if let Some(n) = plain_float(text, pos)? {
        return Ok(n);
    }
    Ok(Value::String(text.to_owned()))
}

fn plain_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn plain_int(text: &str) -> Option<Value> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        match digits.parse::<i64>() {
            Ok(n) => Some(n),
            // Too big for i64: keep it exact as an unsigned if it fits, else fall through to float.
            Err(_) if !negative => return digits.parse::<u64>().ok().map(Value::from),
            Err(_) => None,
        }
    } else {
        None
    }?;
    Some(Value::from(if negative { -parsed } else { parsed }))
}

fn plain_float(text: &str, pos: Pos) -> Result<Option<Value>, SyntaxError> {
    let lower = text.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | "+.inf" | "-.inf" | ".nan") {
        return Err(SyntaxError {
            pos,
            message: format!("`{text}` is not a finite number; quote it if you meant text"),
        });
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if !looks_numeric {
        return Ok(None);
    }
    Ok(text
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number))
}

/// Rewords the parser's terse messages where a person is likely to hit them.
fn describe_scan_error(info: &str) -> String {
    if info.contains("tab") {
        format!("{info} (YAML indentation must use spaces, not tabs)")
    } else {
        info.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_nested_nodes() {
        let doc = parse("name: a\nsteps:\n  - id: one\n    needs: [zero, two]\n").unwrap();
        assert_eq!(doc.pos("name"), Pos { line: 1, column: 7 });
        assert_eq!(doc.pos("steps[0]"), Pos { line: 3, column: 5 });
        assert_eq!(
            doc.pos("steps[0].needs[1]"),
            Pos {
                line: 4,
                column: 19
            }
        );
        // A missing node falls back to its nearest ancestor.
        assert_eq!(doc.pos("steps[0].retry.max"), Pos { line: 3, column: 5 });
    }

    #[test]
    fn json_is_accepted_with_positions() {
        let doc = parse("{\n  \"name\": \"a\",\n  \"steps\": [{\"id\": \"x\"}]\n}").unwrap();
        assert_eq!(doc.value["steps"][0]["id"], "x");
        assert_eq!(
            doc.pos("steps[0].id"),
            Pos {
                line: 3,
                column: 20
            }
        );
    }

    #[test]
    fn core_schema_scalars_resolve() {
        let doc = parse("a: 1\nb: -2.5\nc: true\nd: ~\ne: '1'\nf: yes\ng: 0x1f\nh: 30s\n").unwrap();
        let v = &doc.value;
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], -2.5);
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], Value::Null);
        assert_eq!(v["e"], "1");
        assert_eq!(v["f"], "yes", "YAML 1.2: `yes` is a string");
        assert_eq!(v["g"], 31);
        assert_eq!(v["h"], "30s");
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let err = parse("name: a\nsteps: []\nname: b\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `name`"), "{err}");
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn tabs_in_indentation_are_rejected() {
        let err = parse("steps:\n\t- id: a\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("tab"), "{err}");
    }

    #[test]
    fn alias_bombs_hit_the_node_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}]\n",
                p = prev
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nodes"), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        // Past the parser's own recursion guard: still an error, never a stack overflow.
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&text).is_err());
        // Past our (lower) depth limit.
        let text = format!("{}{}", "[".repeat(65), "]".repeat(65));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nesting"), "{err}");
        let text = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn oversized_documents_and_scalars_are_rejected() {
        let big = "a".repeat(2 * 1024 * 1024);
        assert!(parse(&big).unwrap_err().message.contains("limit"));
        let scalar = format!("a: {}\n", "b".repeat(300 * 1024));
        assert!(parse(&scalar).unwrap_err().message.contains("scalar"));
    }

    #[test]
    fn multiple_documents_are_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        assert!(parse("a: .inf").is_err());
        assert_eq!(parse("a: '.inf'").unwrap().value["a"], ".inf");
    }

    #[test]
    fn unknown_tags_are_rejected() {
        assert!(parse("a: !!binary aGVsbG8=").is_err());
        assert_eq!(parse("a: !!str 12").unwrap().value["a"], "12");
    }
}
