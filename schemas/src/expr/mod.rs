//! The `{{ … }}` expression language used inside workflow definitions.
//!
//! Any string value in a definition may contain expressions:
//!
//! ```yaml
//! with: { url: "https://api.example.com/people?email={{ trigger.body.email | urlencode }}" }
//! if: "{{ steps.enrich.output.status == 200 }}"
//! for_each: "{{ trigger.body.items }}"
//! ```
//!
//! # Three kinds of string
//! - A string without `{{` or `{%` is a **literal**: it is never parsed and renders to itself.
//! - A string that is exactly one `{{ expr }}` (surrounding whitespace allowed) is a **single
//!   expression** and keeps the JSON type of its value: `"{{ trigger.body.items }}"` renders to an
//!   array, `"{{ 1 + 1 }}"` to the number `2`.
//! - Anything else is a **text template** and renders to a string. Inside it, strings are inserted
//!   as they are and every other value is written as compact JSON (`true`, `null`, `[1,2]`,
//!   `{"a":1}`), so the text looks like the data it came from.
//!
//! `{# … #}` comments work inside strings that are already templates; a string whose only
//! template-looking part is `{#` stays a literal, because `{#` is common in ordinary text.
//! To write a literal `{{` in a template, use `{{ "{{" }}` or `{% raw %}{{{% endraw %}`.
//!
//! Rendered output is data, never code: a payload containing `{{ … }}` is inserted as text and
//! is not rendered again.
//!
//! # Scope
//! An expression sees only the [`Scope`] it is given, under the roots in [`ROOTS`]:
//! `trigger`, `event`, `steps` (`steps.<id>.output`), `item`, `inputs` and `run`. There is no
//! template loader (`include`, `import` and `extends` do not exist), no access to the process
//! environment, files, clock or secrets, and no way to define macros.
//!
//! # Limits
//! Every render is bounded by [`Limits`]: the work it may do (fuel), the size of what it
//! produces, and the length of the source. Going over any of them is an [`ExprError`], never a
//! hang, a panic or unbounded memory.
//!
//! # Undefined values
//! Strict: using a root, step or attribute that does not exist is an
//! [`ExprError::UndefinedVariable`] naming it (`trigger.body.emial`). `x is defined` and
//! `x | default(…)` are the ways to accept a missing value.
//!
//! Conditions ([`Template::evaluate_condition`], used for `if:`) are slightly more forgiving,
//! because "the flag is absent" usually means "false": a missing value counts as false wherever
//! only its truth is asked (`{{ trigger.body.urgent }}`, `not x`, `x and y`, `{% if x %}`).
//! Comparing, filtering, printing or reading an attribute of a missing value is still an error,
//! so a misspelt field in `{{ steps.a.output.stauts == 200 }}` is reported instead of silently
//! making the condition false forever. Unknown roots are errors in both modes.
//!
//! # Static analysis
//! [`compile`] checks syntax and filter/test names without a scope and reports positions inside
//! the string; [`Template::references`] lists the roots and step ids an expression reads, so the
//! validator can check them against the workflow.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::ops::{Deref, Range};
use std::sync::LazyLock;

use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// The variables an expression may read; anything else is undefined.
pub const ROOTS: [&str; 6] = ["trigger", "event", "steps", "item", "inputs", "run"];

/// Runtime recursion allowed inside one render (nested blocks, recursive loops). Far below
/// minijinja's own ceiling so that a render stays well inside a 2 MiB thread stack, the size
/// async runtimes give their worker threads.
const MAX_RECURSION: usize = 100;

/// Deepest value converted to JSON. Values built by expressions cannot nest beyond the parser's
/// own limit plus the depth of the scope, so this only guards against a scope built deeper than
/// any JSON parser would accept.
const MAX_DEPTH: usize = 512;

/// Most operators (`|`, `.`, `+`, `not`, …) allowed inside one `{{ … }}` or `{% … %}`. Far more
/// than any real expression needs, and few enough that parsing the longest chain stays well
/// inside a 2 MiB stack.
const MAX_OPERATORS: usize = 500;

/// Bounds on one expression: how much work it may do, how much it may produce and how long its
/// source may be.
///
/// ```
/// use schemas::expr::{self, Limits, Scope};
///
/// let tight = Limits { fuel: 1_000, ..Limits::default() };
/// let template = expr::compile_with("{% for i in range(10000) %}{{ i }}{% endfor %}", &tight).unwrap();
/// let err = template.render_with(&Scope::new(), &tight).unwrap_err();
/// assert_eq!(err.kind(), expr::ExprErrorKind::FuelExhausted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Work one render may do: one unit per instruction executed, plus one unit per 64 bytes of
    /// data created or written. The default allows loops over a few thousand items.
    pub fuel: u64,
    /// Largest result, in bytes: the length of a rendered string, or the compact JSON size of a
    /// single expression's value. For [`render_value`] it bounds the whole tree together.
    pub max_output_bytes: usize,
    /// Longest source accepted by [`compile_with`], in bytes.
    pub max_source_bytes: usize,
}

impl Limits {
    /// The limits used by [`compile`], [`Template::render`] and [`render_value`].
    pub const DEFAULT: Limits = Limits {
        fuel: 100_000,
        max_output_bytes: 1024 * 1024,
        max_source_bytes: 16 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Where something is inside an expression string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// Byte offset from the start of the string.
    pub offset: usize,
    /// Line number, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source` (clamped into the string).
    pub fn in_source(source: &str, offset: usize) -> Location {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why an expression could not be compiled or rendered.
///
/// Branch on [`ExprError::kind`] (or on the variants), never on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The source is longer than [`Limits::max_source_bytes`].
    #[error("expression is {len} bytes long; the limit is {max}")]
    SourceTooLong {
        /// Length of the source in bytes.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The source is not valid template syntax (an unclosed `{{`, a stray `}`, …).
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// What the parser expected or found.
        message: String,
        /// Byte offset inside the string.
        offset: usize,
        /// Line inside the string, starting at 1.
        line: usize,
        /// Column in characters inside the string, starting at 1.
        column: usize,
    },
    /// A filter that does not exist (`{{ x | nope }}`).
    #[error("unknown filter `{name}`{}", at_suffix(.at))]
    UnknownFilter {
        /// The filter name as written.
        name: String,
        /// Where it is used, when known.
        at: Option<Location>,
    },
    /// A test that does not exist (`{{ x is nope }}`).
    #[error("unknown test `{name}`{}", at_suffix(.at))]
    UnknownTest {
        /// The test name as written.
        name: String,
        /// Where it is used, when known.
        at: Option<Location>,
    },
    /// A root, step or attribute that is not in the scope.
    #[error("`{name}` is undefined{}", at_suffix(.at))]
    UndefinedVariable {
        /// The missing path as far as it could be named (`trigger.body.email`, `steps.enrich`).
        name: String,
        /// Where it is used, when known.
        at: Option<Location>,
    },
    /// The render did more work than [`Limits::fuel`] allows (a loop too long, a value too big).
    #[error("expression needs more work than its fuel limit of {fuel} allows")]
    FuelExhausted {
        /// The limit in force.
        fuel: u64,
    },
    /// The result is larger than [`Limits::max_output_bytes`].
    #[error("expression output is larger than the limit of {max} bytes")]
    OutputTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// Any other failure while evaluating: a type error, a bad filter argument, division by
    /// zero, a value JSON cannot represent.
    #[error("{message}{}", at_suffix(.at))]
    Evaluation {
        /// What went wrong.
        message: String,
        /// Where, when known.
        at: Option<Location>,
    },
    /// An error in one string of a JSON tree rendered by [`render_value`].
    #[error("{path}: {error}")]
    At {
        /// Path to the string inside the tree (`values[1]`, `headers.Authorization`).
        path: String,
        /// What went wrong there.
        error: Box<ExprError>,
    },
}

fn at_suffix(at: &Option<Location>) -> String {
    at.map(|at| format!(" at {at}")).unwrap_or_default()
}

/// The cause of an [`ExprError`], without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExprErrorKind {
    /// See [`ExprError::SourceTooLong`].
    SourceTooLong,
    /// See [`ExprError::Syntax`].
    Syntax,
    /// See [`ExprError::UnknownFilter`].
    UnknownFilter,
    /// See [`ExprError::UnknownTest`].
    UnknownTest,
    /// See [`ExprError::UndefinedVariable`].
    UndefinedVariable,
    /// See [`ExprError::FuelExhausted`].
    FuelExhausted,
    /// See [`ExprError::OutputTooLarge`].
    OutputTooLarge,
    /// See [`ExprError::Evaluation`].
    Evaluation,
}

impl ExprErrorKind {
    /// Whether the expression hit one of its [`Limits`] rather than being wrong as written.
    pub fn is_limit(self) -> bool {
        match self {
            ExprErrorKind::SourceTooLong
            | ExprErrorKind::FuelExhausted
            | ExprErrorKind::OutputTooLarge => true,
            ExprErrorKind::Syntax
            | ExprErrorKind::UnknownFilter
            | ExprErrorKind::UnknownTest
            | ExprErrorKind::UndefinedVariable
            | ExprErrorKind::Evaluation => false,
        }
    }
}

impl ExprError {
    /// The cause, for branching; an [`ExprError::At`] reports the kind of the error it wraps.
    pub fn kind(&self) -> ExprErrorKind {
        match self {
            ExprError::SourceTooLong { .. } => ExprErrorKind::SourceTooLong,
            ExprError::Syntax { .. } => ExprErrorKind::Syntax,
            ExprError::UnknownFilter { .. } => ExprErrorKind::UnknownFilter,
            ExprError::UnknownTest { .. } => ExprErrorKind::UnknownTest,
            ExprError::UndefinedVariable { .. } => ExprErrorKind::UndefinedVariable,
            ExprError::FuelExhausted { .. } => ExprErrorKind::FuelExhausted,
            ExprError::OutputTooLarge { .. } => ExprErrorKind::OutputTooLarge,
            ExprError::Evaluation { .. } => ExprErrorKind::Evaluation,
            ExprError::At { error, .. } => error.kind(),
        }
    }

    /// The error itself, without the [`ExprError::At`] path around it.
    pub fn cause(&self) -> &ExprError {
        match self {
            ExprError::At { error, .. } => error.cause(),
            other => other,
        }
    }

    /// The path inside a JSON tree, for errors from [`render_value`].
    pub fn path(&self) -> Option<&str> {
        match self {
            ExprError::At { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Where inside the expression string the problem is, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ExprError::Syntax {
                offset,
                line,
                column,
                ..
            } => Some(Location {
                offset: *offset,
                line: *line,
                column: *column,
            }),
            ExprError::UnknownFilter { at, .. }
            | ExprError::UnknownTest { at, .. }
            | ExprError::UndefinedVariable { at, .. }
            | ExprError::Evaluation { at, .. } => *at,
            ExprError::SourceTooLong { .. }
            | ExprError::FuelExhausted { .. }
            | ExprError::OutputTooLarge { .. } => None,
            ExprError::At { error, .. } => error.location(),
        }
    }

    /// Places the error under `prefix` in a larger document: an error at `values[1]` inside
    /// `with` becomes an error at `with.values[1]`.
    ///
    /// ```
    /// use schemas::expr::{self, Scope};
    /// use serde_json::json;
    ///
    /// let with = json!({ "values": ["ok", "{{ item.qty }}"] });
    /// let err = expr::render_value(&with, &Scope::new()).unwrap_err().within("with");
    /// assert_eq!(err.path(), Some("with.values[1]"));
    /// ```
    pub fn within(self, prefix: &str) -> ExprError {
        if prefix.is_empty() {
            return self;
        }
        match self {
            ExprError::At { path, error } => {
                let path = if path.starts_with('[') {
                    format!("{prefix}{path}")
                } else {
                    format!("{prefix}.{path}")
                };
                ExprError::At { path, error }
            }
            other => ExprError::At {
                path: prefix.to_owned(),
                error: Box::new(other),
            },
        }
    }
}

/// The values an expression can read, under the roots in [`ROOTS`].
///
/// A root left as `None` is undefined: `item` outside a `for_each`, `event` in a run that no
/// event started. `steps` always exists and holds one object per finished step.
///
/// ```
/// use schemas::expr::Scope;
/// use serde_json::json;
///
/// let scope = Scope::new()
///     .with_trigger(json!({ "body": { "email": "ada@example.com" } }))
///     .with_step_output("enrich", json!({ "status": 200 }))
///     .with_run(json!({ "id": "run_1" }));
/// assert_eq!(scope.steps["enrich"], json!({ "output": { "status": 200 } }));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// What started the run (`trigger.body`, `trigger.headers`, …).
    pub trigger: Option<Value>,
    /// The event that started the run, for event-triggered workflows.
    pub event: Option<Value>,
    /// Finished steps by id; each is an object with at least `output`.
    pub steps: Map<String, Value>,
    /// The current element of a `for_each`.
    pub item: Option<Value>,
    /// The workflow's declared inputs.
    pub inputs: Option<Value>,
    /// Facts about the run itself (id, workflow, attempt).
    pub run: Option<Value>,
}

impl Scope {
    /// An empty scope: only `steps` is defined, and empty.
    pub fn new() -> Scope {
        Scope::default()
    }

    /// Sets `trigger`.
    pub fn with_trigger(mut self, trigger: Value) -> Scope {
        self.trigger = Some(trigger);
        self
    }

    /// Sets `event`.
    pub fn with_event(mut self, event: Value) -> Scope {
        self.event = Some(event);
        self
    }

    /// Sets `steps.<id>` to `{ "output": output }`.
    pub fn with_step_output(self, id: impl Into<String>, output: Value) -> Scope {
        let mut step = Map::new();
        step.insert("output".to_owned(), output);
        self.with_step(id, Value::Object(step))
    }

    /// Sets `steps.<id>` to a whole step object, for callers that expose more than `output`.
    pub fn with_step(mut self, id: impl Into<String>, step: Value) -> Scope {
        self.steps.insert(id.into(), step);
        self
    }

    /// Sets `item`.
    pub fn with_item(mut self, item: Value) -> Scope {
        self.item = Some(item);
        self
    }

    /// Sets `inputs`.
    pub fn with_inputs(mut self, inputs: Value) -> Scope {
        self.inputs = Some(inputs);
        self
    }

    /// Sets `run`.
    pub fn with_run(mut self, run: Value) -> Scope {
        self.run = Some(run);
        self
    }

    /// Follows a dotted path (`trigger.body.email`) and returns the shortest prefix of it that
    /// does not exist, or `None` when the whole path resolves.
    fn missing_prefix(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let root = parts.next()?;
        let mut end = root.len();
        let mut current: &Value = if root == "steps" {
            let id = parts.next()?;
            end += 1 + id.len();
            match self.steps.get(id) {
                Some(step) => step,
                None => return Some(path[..end].to_owned()),
            }
        } else {
            match self.root(root) {
                Some(value) => value,
                None => return Some(root.to_owned()),
            }
        };
        for part in parts {
            end += 1 + part.len();
            match current.get(part) {
                Some(next) => current = next,
                None => return Some(path[..end].to_owned()),
            }
        }
        None
    }

    /// A root other than `steps`, when set.
    fn root(&self, root: &str) -> Option<&Value> {
        match root {
            "trigger" => self.trigger.as_ref(),
            "event" => self.event.as_ref(),
            "item" => self.item.as_ref(),
            "inputs" => self.inputs.as_ref(),
            "run" => self.run.as_ref(),
            _ => None,
        }
    }

    fn has_root(&self, root: &str) -> bool {
        root == "steps" || self.root(root).is_some()
    }
}

/// What an expression reads, found without evaluating it.
///
/// ```
/// let template = schemas::expr::compile("{{ steps.enrich.output.status == 200 and trigger.ok }}").unwrap();
/// let refs = template.references();
/// assert!(refs.roots.contains("steps") && refs.roots.contains("trigger"));
/// assert_eq!(refs.steps.iter().collect::<Vec<_>>(), ["enrich"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Every free variable read, by name. Names that are not in [`ROOTS`] are included so that
    /// the validator can report them; built-in functions (`range`, `dict`) are not.
    pub roots: BTreeSet<String>,
    /// Step ids read as `steps.<id>…`.
    pub steps: BTreeSet<String>,
    /// `steps` is also read in a way that does not name the step (`steps[name]`,
    /// `steps | tojson`), so [`References::steps`] may be incomplete.
    pub dynamic_steps: bool,
    /// The dotted paths read, as far as they are written with `.` (`steps.enrich.output.status`).
    pub paths: BTreeSet<String>,
}

impl References {
    fn from_paths(paths: HashSet<String>) -> References {
        let mut refs = References::default();
        for path in paths {
            let mut parts = path.split('.');
            let Some(root) = parts.next() else { continue };
            if GLOBALS.contains(root) {
                continue;
            }
            if root == "steps" {
                match parts.next() {
                    Some(id) => {
                        refs.steps.insert(id.to_owned());
                    }
                    None => refs.dynamic_steps = true,
                }
            }
            refs.roots.insert(root.to_owned());
            refs.paths.insert(path);
        }
        refs
    }
}

/// A compiled expression string: a literal, a single expression or a text template.
///
/// ```
/// use schemas::expr::{self, Scope};
/// use serde_json::json;
///
/// let scope = Scope::new().with_trigger(json!({ "body": { "items": [1, 2, 3] } }));
/// let template = expr::compile("{{ trigger.body.items }}").unwrap();
/// assert_eq!(template.render(&scope).unwrap(), json!([1, 2, 3]));
///
/// let text = expr::compile("{{ trigger.body.items | length }} items").unwrap();
/// assert_eq!(text.render(&scope).unwrap(), json!("3 items"));
/// ```
#[derive(Debug, Clone)]
pub struct Template {
    // The compiled minijinja forms borrow their source, so only the checked source is kept
    // and parsed again per render; parsing a string this size costs microseconds and lets
    // one `Template` render under any `Limits`.
    source: String,
    kind: Kind,
    references: References,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Literal,
    /// Exactly one `{{ … }}`; the range is the expression between the delimiters.
    Single(Range<usize>),
    Text,
}

/// Whether `s` contains template syntax (`{{` or `{%`) and so must be compiled.
///
/// ```
/// assert!(schemas::expr::contains_expression("Hello {{ trigger.body.name }}"));
/// assert!(!schemas::expr::contains_expression("Hello {name}"));
/// ```
pub fn contains_expression(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Compiles `source` under the default [`Limits`].
///
/// Checks the syntax and that every filter and test used exists, and records what the
/// expression reads. Errors point inside `source`.
///
/// ```
/// use schemas::expr::{self, ExprError};
///
/// let template = expr::compile("{{ trigger.body.email | urlencode }}").unwrap();
/// assert!(template.references().roots.contains("trigger"));
///
/// let err = expr::compile("Hello {{ name }").unwrap_err();
/// assert!(matches!(err, ExprError::Syntax { line: 1, column: 15, .. }));
/// ```
pub fn compile(source: &str) -> Result<Template, ExprError> {
    compile_with(source, &Limits::DEFAULT)
}

/// Compiles `source`, refusing sources longer than `limits.max_source_bytes`.
pub fn compile_with(source: &str, limits: &Limits) -> Result<Template, ExprError> {
    if source.len() > limits.max_source_bytes {
        return Err(ExprError::SourceTooLong {
            len: source.len(),
            max: limits.max_source_bytes,
        });
    }
    if !contains_expression(source) {
        return Ok(Template {
            source: source.to_owned(),
            kind: Kind::Literal,
            references: References::default(),
        });
    }
    // Before minijinja sees the source: its parser and compiler recurse once per operator in a
    // chain, so a long enough chain would overflow the stack instead of failing cleanly.
    let names = scan_code(source)?;
    let env: &Environment<'_> = &STRICT;
    let single = single_expression_range(source).and_then(|range| {
        let expression = env.compile_expression(&source[range.clone()]).ok()?;
        Some((range, expression.undeclared_variables(true)))
    });
    let (kind, variables) = match single {
        Some((range, variables)) => (Kind::Single(range), variables),
        None => {
            let template = env
                .template_from_str(source)
                .map_err(|e| syntax_error(&e, source))?;
            (Kind::Text, template.undeclared_variables(true))
        }
    };
    check_names(source, &names)?;
    Ok(Template {
        source: source.to_owned(),
        references: References::from_paths(variables),
        kind,
    })
}

impl Template {
    /// The source this template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the string has no template syntax and renders to itself.
    pub fn is_literal(&self) -> bool {
        self.kind == Kind::Literal
    }

    /// Whether the string is exactly one `{{ … }}` and so renders to a value of any JSON type.
    pub fn is_single_expression(&self) -> bool {
        matches!(self.kind, Kind::Single(_))
    }

    /// What the expression reads; empty for a literal.
    pub fn references(&self) -> &References {
        &self.references
    }

    /// Renders under the default [`Limits`]: a literal to itself, a single expression to its
    /// JSON value, anything else to a string.
    ///
    /// ```
    /// use schemas::expr::{self, Scope};
    /// use serde_json::json;
    ///
    /// let scope = Scope::new().with_step_output("enrich", json!({ "status": 200 }));
    /// let template = expr::compile("{{ steps.enrich.output.status }}").unwrap();
    /// assert_eq!(template.render(&scope).unwrap(), json!(200));
    /// ```
    pub fn render(&self, scope: &Scope) -> Result<Value, ExprError> {
        self.render_with(scope, &Limits::DEFAULT)
    }

    /// Renders under `limits`.
    pub fn render_with(&self, scope: &Scope, limits: &Limits) -> Result<Value, ExprError> {
        let context = Context::new(scope);
        let mut budget = limits.max_output_bytes;
        self.render_in(&context, limits, &mut budget)
    }

    /// Evaluates the template as an `if:` condition under the default [`Limits`].
    ///
    /// A missing value is false where only its truth matters (see the module docs); otherwise
    /// undefined values are errors as in [`Template::render`]. The result is false for `false`,
    /// `null`, `0`, empty arrays and objects, and for strings that are empty or, ignoring case
    /// and surrounding whitespace, `false`, `0` or `null`, as payloads often carry flags as
    /// text. Everything else is true.
    ///
    /// ```
    /// use schemas::expr::{self, Scope};
    /// use serde_json::json;
    ///
    /// let scope = Scope::new().with_trigger(json!({ "body": { "draft": false } }));
    /// let urgent = expr::compile("{{ trigger.body.urgent }}").unwrap();
    /// assert!(!urgent.evaluate_condition(&scope).unwrap());
    /// let published = expr::compile("{{ not trigger.body.draft }}").unwrap();
    /// assert!(published.evaluate_condition(&scope).unwrap());
    /// ```
    pub fn evaluate_condition(&self, scope: &Scope) -> Result<bool, ExprError> {
        self.evaluate_condition_with(scope, &Limits::DEFAULT)
    }

    /// Evaluates the template as a condition under `limits`.
    pub fn evaluate_condition_with(
        &self,
        scope: &Scope,
        limits: &Limits,
    ) -> Result<bool, ExprError> {
        let context = Context::new(scope);
        match &self.kind {
            Kind::Literal => Ok(string_is_true(&self.source)),
            Kind::Single(range) => {
                let env = environment(Mode::Condition, limits.fuel);
                let value = self.eval_single(&env, range, &context, limits)?;
                if value.is_undefined() {
                    return Ok(false);
                }
                match value.as_str() {
                    Some(s) => Ok(string_is_true(s)),
                    None => Ok(value.is_true()),
                }
            }
            Kind::Text => {
                let env = environment(Mode::Condition, limits.fuel);
                let mut budget = limits.max_output_bytes;
                let text = self.render_text(&env, &context, limits, &mut budget)?;
                Ok(string_is_true(&text))
            }
        }
    }

    fn render_in(
        &self,
        context: &Context<'_>,
        limits: &Limits,
        budget: &mut usize,
    ) -> Result<Value, ExprError> {
        match &self.kind {
            Kind::Literal => Ok(Value::String(self.source.clone())),
            Kind::Single(range) => {
                let env = environment(Mode::Render, limits.fuel);
                let value = self.eval_single(&env, range, context, limits)?;
                if value.is_undefined() {
                    return self.undefined_single(&env, context, limits);
                }
                match to_json(&value, budget, 0) {
                    Ok(json) => Ok(json),
                    Err(e) => Err(self.conversion_error(e, context, limits, Some(range.start))),
                }
            }
            Kind::Text => {
                let env = environment(Mode::Render, limits.fuel);
                self.render_text(&env, context, limits, budget)
                    .map(Value::String)
            }
        }
    }

    fn eval_single(
        &self,
        env: &Environment<'_>,
        range: &Range<usize>,
        context: &Context<'_>,
        limits: &Limits,
    ) -> Result<minijinja::Value, ExprError> {
        self.check_roots()?;
        let expression = env
            .compile_expression(&self.source[range.clone()])
            .map_err(|e| syntax_error(&e, &self.source))?;
        expression
            .eval(context.value_for(&self.references))
            .map_err(|e| self.runtime_error(&e, range.start, context, limits, false))
    }

    fn render_text(
        &self,
        env: &Environment<'_>,
        context: &Context<'_>,
        limits: &Limits,
        budget: &mut usize,
    ) -> Result<String, ExprError> {
        self.check_roots()?;
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| syntax_error(&e, &self.source))?;
        let mut out = CappedBuffer::new(*budget);
        let rendered = template.render_captured_to(context.value_for(&self.references), &mut out);
        if let Err(e) = rendered {
            return Err(self.runtime_error(&e, 0, context, limits, out.overflowed));
        }
        *budget -= out.buf.len();
        String::from_utf8(out.buf).map_err(|_| ExprError::Evaluation {
            message: "rendered output is not valid UTF-8".to_owned(),
            at: None,
        })
    }

    /// A single expression whose value is undefined: either a missing value, reported by
    /// name, or an `if` without `else` whose condition was false, which is `null`.
    fn undefined_single(
        &self,
        env: &Environment<'_>,
        context: &Context<'_>,
        limits: &Limits,
    ) -> Result<Value, ExprError> {
        // Printing tells the two apart: strict printing of a missing value fails and names it,
        // while the result of a false `if` without `else` prints as nothing.
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| syntax_error(&e, &self.source))?;
        let mut sink = CappedBuffer::new(0);
        match template.render_captured_to(context.value_for(&self.references), &mut sink) {
            Err(e) if e.kind() == ErrorKind::UndefinedError => {
                Err(self.runtime_error(&e, 0, context, limits, false))
            }
            _ => Ok(Value::Null),
        }
    }

    /// Refuses names that are not roots before evaluating, so the error names them even where
    /// minijinja would only see an anonymous undefined value.
    fn check_roots(&self) -> Result<(), ExprError> {
        match self
            .references
            .roots
            .iter()
            .find(|r| !ROOTS.contains(&r.as_str()))
        {
            Some(name) => Err(ExprError::UndefinedVariable {
                name: name.clone(),
                at: find_word(&self.source, name).map(|o| Location::in_source(&self.source, o)),
            }),
            None => Ok(()),
        }
    }

    fn runtime_error(
        &self,
        e: &minijinja::Error,
        base: usize,
        context: &Context<'_>,
        limits: &Limits,
        overflowed: bool,
    ) -> ExprError {
        if overflowed {
            return ExprError::OutputTooLarge {
                max: limits.max_output_bytes,
            };
        }
        let range = e.range().map(|r| base + r.start..base + r.end);
        let at = range
            .clone()
            .map(|r| Location::in_source(&self.source, r.start));
        let snippet = || {
            range
                .clone()
                .and_then(|r| self.source.get(r))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        match e.kind() {
            ErrorKind::OutOfFuel => ExprError::FuelExhausted { fuel: limits.fuel },
            ErrorKind::UndefinedError => ExprError::UndefinedVariable {
                name: e
                    .detail()
                    .and_then(undefined_name_in_detail)
                    .map(str::to_owned)
                    .or_else(|| self.first_missing_path(context))
                    .or_else(snippet)
                    .unwrap_or_else(|| "value".to_owned()),
                at,
            },
            ErrorKind::UnknownFilter => ExprError::UnknownFilter {
                name: snippet().unwrap_or_default(),
                at,
            },
            ErrorKind::UnknownTest => ExprError::UnknownTest {
                name: snippet().unwrap_or_default(),
                at,
            },
            ErrorKind::SyntaxError => syntax_error(e, &self.source),
            _ => ExprError::Evaluation {
                message: match e.detail() {
                    Some(detail) => format!("{}: {detail}", e.kind()),
                    None => e.kind().to_string(),
                },
                at,
            },
        }
    }

    fn conversion_error(
        &self,
        e: ConvertError,
        context: &Context<'_>,
        limits: &Limits,
        offset: Option<usize>,
    ) -> ExprError {
        let at = offset.map(|o| Location::in_source(&self.source, o));
        match e {
            ConvertError::TooLarge => ExprError::OutputTooLarge {
                max: limits.max_output_bytes,
            },
            ConvertError::Undefined => ExprError::UndefinedVariable {
                name: self
                    .first_missing_path(context)
                    .unwrap_or_else(|| self.source.trim().to_owned()),
                at,
            },
            ConvertError::Unrepresentable(what) => ExprError::Evaluation {
                message: format!("{what} cannot be represented as JSON"),
                at,
            },
            ConvertError::TooDeep => ExprError::Evaluation {
                message: format!("value is nested more than {MAX_DEPTH} levels deep"),
                at,
            },
        }
    }

    fn first_missing_path(&self, context: &Context<'_>) -> Option<String> {
        self.references
            .paths
            .iter()
            .find_map(|path| context.scope.missing_prefix(path))
    }
}

/// Renders every string in a JSON tree (a step's `with` block) under the default [`Limits`].
///
/// Object keys, numbers, booleans and `null` are kept as they are; each string renders as
/// [`Template::render`] would, so `"{{ item.qty }}"` becomes a number. Values produced by an
/// expression are not walked again, so data containing `{{ … }}` stays text. The output limit
/// applies to the whole tree; errors name the path of the failing string.
///
/// ```
/// use schemas::expr::{self, Scope};
/// use serde_json::json;
///
/// let scope = Scope::new().with_item(json!({ "sku": "A-1", "qty": 3 }));
/// let with = json!({ "values": ["{{ item.sku }}", "{{ item.qty }}"], "note": "x" });
/// let rendered = expr::render_value(&with, &scope).unwrap();
/// assert_eq!(rendered, json!({ "values": ["A-1", 3], "note": "x" }));
///
/// let err = expr::render_value(&json!({ "values": ["{{ item.missing }}"] }), &scope).unwrap_err();
/// assert_eq!(err.path(), Some("values[0]"));
/// assert_eq!(err.kind(), expr::ExprErrorKind::UndefinedVariable);
/// ```
pub fn render_value(value: &Value, scope: &Scope) -> Result<Value, ExprError> {
    render_value_with(value, scope, &Limits::DEFAULT)
}

/// Renders every string in a JSON tree under `limits`. Fuel applies to each string; the
/// output limit to the whole tree.
pub fn render_value_with(
    value: &Value,
    scope: &Scope,
    limits: &Limits,
) -> Result<Value, ExprError> {
    let context = Context::new(scope);
    let mut budget = limits.max_output_bytes;
    let mut path = String::new();
    render_tree(value, &context, limits, &mut budget, &mut path, 0)
}

fn render_tree(
    value: &Value,
    context: &Context<'_>,
    limits: &Limits,
    budget: &mut usize,
    path: &mut String,
    depth: usize,
) -> Result<Value, ExprError> {
    if depth > MAX_DEPTH {
        return Err(ExprError::Evaluation {
            message: format!("value is nested more than {MAX_DEPTH} levels deep"),
            at: None,
        }
        .within(path));
    }
    match value {
        Value::String(s) if contains_expression(s) => compile_with(s, limits)
            .and_then(|template| template.render_in(context, limits, budget))
            .map_err(|e| e.within(path)),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(render_tree(item, context, limits, budget, path, depth + 1)?);
                path.truncate(len);
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, item) in map {
                let len = path.len();
                push_key(path, key);
                out.insert(
                    key.clone(),
                    render_tree(item, context, limits, budget, path, depth + 1)?,
                );
                path.truncate(len);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::String(key.to_owned()).to_string());
        path.push(']');
    }
}

/// The scope as minijinja values, converted lazily: only roots that an expression reads are
/// converted, and each at most once per [`render_value`] call.
struct Context<'a> {
    scope: &'a Scope,
    roots: [OnceCell<minijinja::Value>; ROOTS.len()],
}

impl<'a> Context<'a> {
    fn new(scope: &'a Scope) -> Context<'a> {
        Context {
            scope,
            roots: Default::default(),
        }
    }

    fn value_for(&self, references: &References) -> minijinja::Value {
        let pairs = ROOTS.iter().enumerate().filter_map(|(i, &root)| {
            if !references.roots.contains(root) || !self.scope.has_root(root) {
                return None;
            }
            let value = self.roots[i].get_or_init(|| match self.scope.root(root) {
                Some(json) => minijinja::Value::from(Serde(json)),
                None => minijinja::Value::from(Serde(&self.scope.steps)),
            });
            Some((root, value.clone()))
        });
        minijinja::Value::from_pairs(pairs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Render,
    Condition,
}

fn build_environment(mode: Mode, fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(match mode {
        Mode::Render => UndefinedBehavior::Strict,
        Mode::Condition => UndefinedBehavior::SemiStrict,
    });
    env.set_fuel(Some(fuel));
    env.set_recursion_limit(MAX_RECURSION);
    // Debug info is what lets an undefined-value error name the expression that produced it.
    env.set_debug(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // `namespace()` is the only way to carry a value from one loop iteration to the next; with
    // it a template can nest a list thousands deep, and printing that overflows the stack.
    env.remove_global("namespace");
    // `debug()` prints the whole render state, scope included.
    env.remove_global("debug");
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    // A definition string is data: its trailing newline belongs to it.
    syntax.keep_trailing_newline(true);
    if let Ok(syntax) = syntax.build() {
        env.set_syntax(syntax);
    }
    env.set_formatter(format_value);
    env
}

static STRICT: LazyLock<Environment<'static>> =
    LazyLock::new(|| build_environment(Mode::Render, Limits::DEFAULT.fuel));

static SEMI_STRICT: LazyLock<Environment<'static>> =
    LazyLock::new(|| build_environment(Mode::Condition, Limits::DEFAULT.fuel));

/// Names of the built-in functions, which are free variables to the parser but not roots.
static GLOBALS: LazyLock<HashSet<String>> =
    LazyLock::new(|| STRICT.globals().map(|(name, _)| name.to_owned()).collect());

/// The shared environment for the default fuel; a fresh one for any other, which is cheap
/// because environments share their built-in filters and tests.
enum EnvHandle {
    Shared(&'static Environment<'static>),
    Own(Box<Environment<'static>>),
}

impl Deref for EnvHandle {
    type Target = Environment<'static>;

    fn deref(&self) -> &Environment<'static> {
        match self {
            EnvHandle::Shared(env) => env,
            EnvHandle::Own(env) => env,
        }
    }
}

fn environment(mode: Mode, fuel: u64) -> EnvHandle {
    match (mode, fuel == Limits::DEFAULT.fuel) {
        (Mode::Render, true) => EnvHandle::Shared(&STRICT),
        (Mode::Condition, true) => EnvHandle::Shared(&SEMI_STRICT),
        (mode, false) => EnvHandle::Own(Box::new(build_environment(mode, fuel))),
    }
}

/// Writes values into text: strings as they are, everything else as compact JSON.
fn format_value(
    out: &mut minijinja::Output<'_>,
    _state: &mut minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    // Strict modes reject a missing value before it gets here; what still arrives undefined
    // is the result of an `if` without `else`, which prints as nothing.
    if value.is_undefined() {
        return Ok(());
    }
    if let Some(s) = value.as_str() {
        return out.write_str(s).map_err(minijinja::Error::from);
    }
    // The writer below `out` enforces the output limit, so this needs no budget of its own.
    let mut budget = usize::MAX;
    match to_json(value, &mut budget, 0) {
        Ok(json) => write!(out, "{json}").map_err(minijinja::Error::from),
        Err(ConvertError::Undefined) => Err(minijinja::Error::from(ErrorKind::UndefinedError)),
        Err(e) => Err(minijinja::Error::new(
            ErrorKind::BadSerialization,
            e.to_string(),
        )),
    }
}

#[derive(Debug)]
enum ConvertError {
    TooLarge,
    TooDeep,
    Undefined,
    Unrepresentable(&'static str),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::TooLarge => f.write_str("value is too large"),
            ConvertError::TooDeep => write!(f, "value is nested more than {MAX_DEPTH} levels deep"),
            ConvertError::Undefined => f.write_str("value contains an undefined value"),
            ConvertError::Unrepresentable(what) => {
                write!(f, "{what} cannot be represented as JSON")
            }
        }
    }
}

fn spend(budget: &mut usize, bytes: usize) -> Result<(), ConvertError> {
    *budget = budget.checked_sub(bytes).ok_or(ConvertError::TooLarge)?;
    Ok(())
}

/// Converts a minijinja value to JSON, charging its approximate compact JSON size to `budget`.
fn to_json(
    value: &minijinja::Value,
    budget: &mut usize,
    depth: usize,
) -> Result<Value, ConvertError> {
    if depth > MAX_DEPTH {
        return Err(ConvertError::TooDeep);
    }
    match value.kind() {
        ValueKind::Undefined => Err(ConvertError::Undefined),
        ValueKind::None => {
            spend(budget, 4)?;
            Ok(Value::Null)
        }
        ValueKind::Bool => {
            spend(budget, 5)?;
            Ok(Value::Bool(value.is_true()))
        }
        ValueKind::Number => {
            let number = json_number(value)?;
            spend(budget, number.to_string().len())?;
            Ok(Value::Number(number))
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            spend(budget, s.len() + 2)?;
            Ok(Value::String(s.to_owned()))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            spend(budget, 2)?;
            let items = value
                .try_iter()
                .map_err(|_| ConvertError::Unrepresentable("an iterable"))?;
            let mut out = Vec::new();
            for item in items {
                spend(budget, 1)?;
                out.push(to_json(&item, budget, depth + 1)?);
            }
            Ok(Value::Array(out))
        }
        ValueKind::Map => {
            spend(budget, 2)?;
            let keys = value
                .try_iter()
                .map_err(|_| ConvertError::Unrepresentable("a map"))?;
            let mut out = Map::new();
            for key in keys {
                let item = value
                    .get_item(&key)
                    .map_err(|_| ConvertError::Unrepresentable("a map"))?;
                let key = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => match to_json(&key, budget, depth + 1)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                };
                spend(budget, key.len() + 4)?;
                out.insert(key, to_json(&item, budget, depth + 1)?);
            }
            Ok(Value::Object(out))
        }
        ValueKind::Bytes => Err(ConvertError::Unrepresentable("a byte string")),
        ValueKind::Plain => Err(ConvertError::Unrepresentable("a function or object")),
        ValueKind::Invalid => Err(ConvertError::Unrepresentable("an invalid value")),
        _ => Err(ConvertError::Unrepresentable("a value of this kind")),
    }
}

fn json_number(value: &minijinja::Value) -> Result<serde_json::Number, ConvertError> {
    if value.is_integer() {
        if let Ok(n) = i64::try_from(value.clone()) {
            return Ok(n.into());
        }
        if let Ok(n) = u64::try_from(value.clone()) {
            return Ok(n.into());
        }
    }
    f64::try_from(value.clone())
        .ok()
        .and_then(serde_json::Number::from_f64)
        .ok_or(ConvertError::Unrepresentable("a number that is not finite"))
}

/// Truth of a string in a condition; see [`Template::evaluate_condition`].
fn string_is_true(s: &str) -> bool {
    let s = s.trim();
    !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0" || s.eq_ignore_ascii_case("null"))
}

/// An in-memory writer that refuses to grow past its limit, so an over-long render stops at
/// the limit instead of finishing first.
struct CappedBuffer {
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl CappedBuffer {
    fn new(max: usize) -> CappedBuffer {
        CappedBuffer {
            buf: Vec::new(),
            max,
            overflowed: false,
        }
    }
}

impl io::Write for CappedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.max {
            self.overflowed = true;
            return Err(io::Error::other("output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The expression inside `{{ … }}` when `source` is nothing but that (plus surrounding
/// whitespace), without whitespace-control markers (`{{-`, `-}}`).
fn single_expression_range(source: &str) -> Option<Range<usize>> {
    let start = source.len() - source.trim_start().len();
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let mut range = start + 2..start + 2 + inner.len();
    if inner.starts_with(['-', '+']) {
        range.start += 1;
    }
    if range.start < range.end && source[range.clone()].ends_with(['-', '+']) {
        range.end -= 1;
    }
    Some(range)
}

fn syntax_error(e: &minijinja::Error, source: &str) -> ExprError {
    let offset = match (e.range(), e.line()) {
        (Some(range), _) => range.start,
        (None, Some(line)) => source
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum(),
        (None, None) => 0,
    };
    let at = Location::in_source(source, offset);
    ExprError::Syntax {
        message: e.detail().unwrap_or("invalid syntax").to_owned(),
        offset: at.offset,
        line: at.line,
        column: at.column,
    }
}

/// The expression named in minijinja's "`expr` is undefined" detail.
fn undefined_name_in_detail(detail: &str) -> Option<&str> {
    let end = detail.find("` is undefined")?;
    let start = detail[..end].rfind('`')? + 1;
    Some(&detail[start..end]).filter(|name| !name.is_empty())
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Offset of the first occurrence of `word` in `source` that is not part of a longer name.
fn find_word(source: &str, word: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    source.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + word.len()).copied();
        !before.is_some_and(|b| is_ident_continue(b) || b == b'.')
            && !after.is_some_and(is_ident_continue)
    })
}

// --- Static check of filter and test names -------------------------------------------------
//
// minijinja resolves filters and tests when they run, so a misspelt filter in a branch that is
// rarely taken would only fail in production. The scan below finds the names in the code parts
// of an already-parsed template; it only needs to understand enough (string literals, comments,
// raw blocks, brackets) not to mistake text for code.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameKind {
    Filter,
    Test,
}

/// Finds the filter and test names used in the code of `source`, refusing code with more
/// operators between one pair of delimiters than [`MAX_OPERATORS`].
fn scan_code(source: &str) -> Result<Vec<(NameKind, usize, &str)>, ExprError> {
    let mut names = Vec::new();
    for (span, is_block) in code_spans(source) {
        if scan_span(source, span.clone(), is_block, &mut names) > MAX_OPERATORS {
            let at = Location::in_source(source, span.start);
            return Err(ExprError::Syntax {
                message: format!(
                    "expression is too complex: more than {MAX_OPERATORS} operators inside one pair of delimiters"
                ),
                offset: at.offset,
                line: at.line,
                column: at.column,
            });
        }
    }
    Ok(names)
}

fn check_names(source: &str, names: &[(NameKind, usize, &str)]) -> Result<(), ExprError> {
    let mut known: HashSet<(NameKind, &str)> = HashSet::new();
    for &(kind, offset, name) in names {
        if known.contains(&(kind, name)) {
            continue;
        }
        let at = Some(Location::in_source(source, offset));
        match kind {
            NameKind::Filter if !filter_exists(name) => {
                return Err(ExprError::UnknownFilter {
                    name: name.to_owned(),
                    at,
                });
            }
            NameKind::Test if !test_exists(name) => {
                return Err(ExprError::UnknownTest {
                    name: name.to_owned(),
                    at,
                });
            }
            NameKind::Filter | NameKind::Test => {
                known.insert((kind, name));
            }
        }
    }
    Ok(())
}

/// minijinja does not list its filters, so ask it: applying an unknown filter is the only
/// way to get `UnknownFilter`.
fn filter_exists(name: &str) -> bool {
    probe(&format!("none | {name}"), ErrorKind::UnknownFilter)
}

fn test_exists(name: &str) -> bool {
    probe(&format!("none is {name}"), ErrorKind::UnknownTest)
}

fn probe(code: &str, unknown: ErrorKind) -> bool {
    let env: &Environment<'_> = &STRICT;
    match env.compile_expression(code) {
        Ok(expression) => !matches!(expression.eval(()), Err(e) if e.kind() == unknown),
        Err(_) => true,
    }
}

/// Byte ranges of the code inside `{{ … }}` and `{% … %}` (the flag says which), skipping
/// comments and raw blocks.
fn code_spans(source: &str) -> Vec<(Range<usize>, bool)> {
    let bytes = source.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'#' => {
                i = source[i + 2..]
                    .find("#}")
                    .map_or(bytes.len(), |end| i + 2 + end + 2);
            }
            b'{' => {
                let (end, next) = code_end(bytes, i + 2, b"}}");
                spans.push((i + 2..end, false));
                i = next;
            }
            b'%' => {
                let start = i + 2;
                if is_bare_tag(source, start, "raw") {
                    i = end_of_raw(source, start);
                    continue;
                }
                let (end, next) = code_end(bytes, start, b"%}");
                spans.push((start..end, true));
                i = next;
            }
            _ => i += 1,
        }
    }
    spans
}

/// Whether the tag whose code starts at `start` is exactly `word` (`{% raw %}`, `{%- endraw +%}`),
/// which is how the lexer recognises raw blocks.
fn is_bare_tag(source: &str, start: usize, word: &str) -> bool {
    let Some(rest) = source.get(start..) else {
        return false;
    };
    let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    let Some(rest) = rest
        .trim_start_matches(|c: char| c.is_ascii_whitespace())
        .strip_prefix(word)
    else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    rest.starts_with("%}")
}

/// Where scanning resumes after the `{% endraw %}` closing a raw block that starts at `start`.
fn end_of_raw(source: &str, start: usize) -> usize {
    let mut from = start;
    while let Some(found) = source[from..].find("{%") {
        let tag = from + found + 2;
        if is_bare_tag(source, tag, "endraw") {
            return source[tag..]
                .find("%}")
                .map_or(source.len(), |end| tag + end + 2);
        }
        from = tag;
    }
    source.len()
}

/// The end of the code starting at `start` (where `close` appears outside strings and
/// brackets) and the position just after the closing delimiter.
fn code_end(bytes: &[u8], start: usize, close: &[u8]) -> (usize, usize) {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            _ if depth == 0 && bytes[i..].starts_with(close) => return (i, i + close.len()),
            _ => {}
        }
        i += 1;
    }
    (bytes.len(), bytes.len())
}

/// The position just after the string literal starting at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Collects filter names (after `|`, or after a `filter` tag) and test names (after `is` /
/// `is not`) in one span of code, with their offsets, and returns how many operators the span
/// holds: an upper bound on how deeply its expressions nest.
fn scan_span<'a>(
    source: &'a str,
    span: Range<usize>,
    is_block: bool,
    names: &mut Vec<(NameKind, usize, &'a str)>,
) -> usize {
    let bytes = source.as_bytes();
    let mut operators = 0;
    let mut expect: Option<NameKind> = None;
    let mut previous: Option<u8> = None;
    let mut first_word = true;
    let mut i = span.start;
    if i < span.end && matches!(bytes[i], b'-' | b'+') {
        i += 1;
    }
    while i < span.end {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'\'' || b == b'"' {
            i = skip_string(bytes, i).min(span.end);
            expect = None;
            previous = Some(b);
            first_word = false;
            continue;
        }
        if b.is_ascii_digit() {
            while i < span.end && (is_ident_continue(bytes[i]) || bytes[i] == b'.') {
                i += 1;
            }
            expect = None;
            previous = Some(b'0');
            first_word = false;
            continue;
        }
        if is_ident_start(b) {
            let start = i;
            while i < span.end && is_ident_continue(bytes[i]) {
                i += 1;
            }
            let word = &source[start..i];
            if matches!(word, "and" | "or" | "not" | "is" | "in" | "if" | "else") {
                operators += 1;
            }
            match expect.take() {
                Some(NameKind::Test) if word == "not" => expect = Some(NameKind::Test),
                Some(kind) => names.push((kind, start, word)),
                None if word == "is" && previous != Some(b'.') => expect = Some(NameKind::Test),
                None if word == "filter" && is_block && first_word => {
                    expect = Some(NameKind::Filter)
                }
                None => {}
            }
            previous = Some(b'a');
            first_word = false;
            continue;
        }
        if b"|.[({+-*/%~<>=!".contains(&b) {
            operators += 1;
        }
        expect = (b == b'|').then_some(NameKind::Filter);
        previous = Some(b);
        first_word = false;
        i += 1;
    }
    operators
}
