//! Source text → a checked [`Workflow`], or every problem in it at once.
//!
//! Validation runs in three passes, each keeping going after a problem so the author sees
//! the whole list in one go:
//! 1. **syntax** ([`crate::source`]): YAML/JSON with limits; one error here stops everything,
//!    because nothing after a broken token can be trusted.
//! 2. **structure**: the typed deserialization. Each step and trigger is deserialized on its
//!    own, so one broken step does not hide problems in the others.
//! 3. **meaning**: names, references, the `needs` graph, expressions, durations, cron,
//!    time zones, limits and the action catalog.
//!
//! Every [`Problem`] carries a path in the document (`steps[2].needs[0]`), the line and column
//! it starts at, and a message written for the person who has to fix it.
//!
//! ```
//! use schemas::{catalog::AnyAction, validate::validate};
//!
//! let problems = validate("name: demo\nsteps:\n  - id: a\n    needs: [b]\n    emit: { event: x }\n", &AnyAction)
//!     .unwrap_err();
//! assert_eq!(problems.0[0].path, "steps[0].needs[0]");
//! assert_eq!((problems.0[0].pos.line, problems.0[0].pos.column), (4, 13));
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::catalog::{ActionCatalog, suggest};
use crate::definition::{MAX_WEBHOOK_BODY_BYTES, SignatureScheme, Step, Trigger, Workflow};
use crate::duration::Duration;
use crate::expr;
use crate::source::{self, Document, Pos, join_index, join_key};

/// Most steps one workflow may have.
pub const MAX_STEPS: usize = 1_000;
/// Most triggers one workflow may have.
pub const MAX_TRIGGERS: usize = 100;
/// Largest `max_parallel`.
pub const MAX_PARALLEL: u32 = 1_000;
/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest step or run timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// Names every expression may use at the top level.
const ROOTS: &[&str] = &["trigger", "event", "steps", "inputs", "run"];

/// One thing wrong with a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document, e.g. `steps[2].needs[0]` (empty for the whole document).
    pub path: String,
    /// Line and column in the source text.
    pub pos: Pos,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}: {}: {}",
            self.pos.line, self.pos.column, path, self.message
        )
    }
}

/// Every problem found in a definition, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Validates definition text (YAML or JSON) against the format and the action catalog.
pub fn validate(text: &str, catalog: &dyn ActionCatalog) -> Result<Workflow, Problems> {
    let doc = source::parse(text).map_err(|e| {
        Problems(vec![Problem {
            path: String::new(),
            pos: e.pos,
            message: e.message,
        }])
    })?;
    validate_document(&doc, catalog)
}

/// Validates an already parsed [`Document`].
pub fn validate_document(
    doc: &Document,
    catalog: &dyn ActionCatalog,
) -> Result<Workflow, Problems> {
    let mut v = Validator {
        doc,
        problems: Vec::new(),
    };
    let parts = v.structure();
    v.meaning(&parts, catalog);
    let mut problems = v.problems;
    if problems.is_empty() {
        if let Some(workflow) = parts.complete {
            return Ok(workflow);
        }
        // Unreachable in practice: an incomplete parse always records why.
        problems.push(Problem {
            path: String::new(),
            pos: Pos::START,
            message: "definition could not be read".into(),
        });
    }
    problems.sort_by(|a, b| a.pos.cmp(&b.pos).then_with(|| a.path.cmp(&b.path)));
    problems.dedup();
    Err(Problems(problems))
}

/// What the structural pass could read.
struct Parts {
    /// The whole workflow, when every part deserialized.
    complete: Option<Workflow>,
    /// Top-level fields (with `steps` and `triggers` read separately below).
    top: Option<Workflow>,
    /// Steps that deserialized, with their index in the document.
    steps: Vec<(usize, Step)>,
    /// Triggers that deserialized, with their index in the document.
    triggers: Vec<(usize, Trigger)>,
    /// Ids of steps that did not deserialize, so references to them are not reported twice.
    unreadable_step_ids: HashSet<String>,
}

struct Validator<'a> {
    doc: &'a Document,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let pos = self.doc.pos(&path);
        self.problems.push(Problem {
            path,
            pos,
            message: message.into(),
        });
    }

    // ---- pass 2: structure -------------------------------------------------------------

    fn structure(&mut self) -> Parts {
        let value = &self.doc.value;
        let mut parts = Parts {
            complete: None,
            top: None,
            steps: Vec::new(),
            triggers: Vec::new(),
            unreadable_step_ids: HashSet::new(),
        };
        let Value::Object(root) = value else {
            self.report(
                "",
                "a workflow definition must be a mapping with `name` and `steps`",
            );
            return parts;
        };
        if let Ok(wf) = serde_json::from_value::<Workflow>(value.clone()) {
            parts.steps = wf.steps.iter().cloned().enumerate().collect();
            parts.triggers = wf.triggers.iter().cloned().enumerate().collect();
            parts.top = Some(wf.clone());
            parts.complete = Some(wf);
            return parts;
        }

        // Read each part on its own so every broken step is reported, not just the first.
        let mut top = root.clone();
        let steps = top.insert("steps".into(), Value::Array(Vec::new()));
        let triggers = top.insert("triggers".into(), Value::Array(Vec::new()));
        if steps.is_none() {
            self.report("", "missing `steps`: a workflow needs at least one step");
        }
        parts.top = self.read::<Workflow>("", &Value::Object(top));

        match steps {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = join_index("steps", i);
                    match self.read::<Step>(&path, item) {
                        Some(step) => parts.steps.push((i, step)),
                        None => {
                            if let Some(id) = item.get("id").and_then(Value::as_str) {
                                parts.unreadable_step_ids.insert(id.to_owned());
                            }
                        }
                    }
                }
            }
            Some(_) => self.report("steps", "`steps` must be a list of steps"),
            None => {}
        }
        match triggers {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = join_index("triggers", i);
                    if let Some(t) = self.read::<Trigger>(&path, item) {
                        parts.triggers.push((i, t));
                    }
                }
            }
            Some(_) => self.report(
                "triggers",
                "`triggers` must be a list, e.g. `- webhook: { id: crm }`",
            ),
            None => {}
        }
        parts
    }

    /// Deserializes one part, reporting the first problem in it at its exact path.
    fn read<T: DeserializeOwned>(&mut self, base: &str, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let mut path = base.to_owned();
                for segment in err.path().iter() {
                    path = match segment {
                        serde_path_to_error::Segment::Seq { index } => join_index(&path, *index),
                        serde_path_to_error::Segment::Map { key } => join_key(&path, key),
                        serde_path_to_error::Segment::Enum { variant } => join_key(&path, variant),
                        serde_path_to_error::Segment::Unknown => path,
                    };
                }
                let message = describe_serde_error(&err.into_inner().to_string());
                self.report(path, message);
                None
            }
        }
    }

    // ---- pass 3: meaning ---------------------------------------------------------------

    fn meaning(&mut self, parts: &Parts, catalog: &dyn ActionCatalog) {
        if let Some(top) = &parts.top {
            self.check_top(top);
        }
        let step_count = self
            .doc
            .value
            .get("steps")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if step_count > MAX_STEPS {
            self.report(
                "steps",
                format!("{step_count} steps is more than the limit of {MAX_STEPS}"),
            );
        }
        if parts.triggers.len() > MAX_TRIGGERS {
            self.report("triggers", format!("more than {MAX_TRIGGERS} triggers"));
        }

        // Ids: well-formed and unique.
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (i, step) in &parts.steps {
            let path = join_key(&join_index("steps", *i), "id");
            if !is_step_id(&step.id) {
                self.report(
                    &path,
                    format!(
                        "step id `{}` is not valid: ids are used in expressions as `steps.<id>`, so use lowercase letters, digits and `_`, starting with a letter (at most 64)",
                        step.id
                    ),
                );
            }
            if let Some(first) = first_seen.get(step.id.as_str()) {
                let first_line = self.doc.pos(&join_index("steps", *first)).line;
                self.report(
                    &path,
                    format!(
                        "duplicate step id `{}` (first used at line {first_line})",
                        step.id
                    ),
                );
            } else {
                first_seen.insert(&step.id, *i);
            }
        }
        let known: HashSet<&str> = parts
            .steps
            .iter()
            .map(|(_, s)| s.id.as_str())
            .chain(parts.unreadable_step_ids.iter().map(String::as_str))
            .collect();

        // Graph: every `needs` entry names a known step other than itself.
        let index_of: HashMap<&str, usize> = parts
            .steps
            .iter()
            .enumerate()
            .map(|(k, (_, s))| (s.id.as_str(), k))
            .collect();
        let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); parts.steps.len()];
        for (k, (i, step)) in parts.steps.iter().enumerate() {
            let mut seen = HashSet::new();
            for (j, need) in step.needs.iter().enumerate() {
                let path = join_index(&join_key(&join_index("steps", *i), "needs"), j);
                if need == &step.id {
                    self.report(&path, format!("step `{need}` cannot need itself"));
                } else if !seen.insert(need.as_str()) {
                    self.report(&path, format!("`{need}` is listed twice in `needs`"));
                } else if let Some(target) = index_of.get(need.as_str()) {
                    edges[k].push((*target, j));
                } else if !known.contains(need.as_str()) {
                    self.report(&path, unknown_step_message(need, &known));
                }
            }
        }
        self.check_cycles(parts, &edges);
        let upstream = upstream_sets(&edges);

        for (k, (i, step)) in parts.steps.iter().enumerate() {
            let ups: HashSet<&str> = upstream[k]
                .iter()
                .map(|u| parts.steps[*u].1.id.as_str())
                .collect();
            self.check_step(*i, step, &ups, &known, catalog);
        }

        for (i, trigger) in &parts.triggers {
            self.check_trigger(*i, trigger);
        }
        let mut hook_ids: HashMap<&str, usize> = HashMap::new();
        for (i, trigger) in &parts.triggers {
            if let Trigger::Webhook(w) = trigger
                && let Some(first) = hook_ids.insert(&w.id, *i)
            {
                let line = self.doc.pos(&join_index("triggers", first)).line;
                self.report(
                    join_key(&join_index("triggers", *i), "webhook.id"),
                    format!(
                        "duplicate webhook trigger id `{}` (first used at line {line})",
                        w.id
                    ),
                );
            }
        }

        if let Some(top) = &parts.top {
            let all: HashSet<&str> = known.clone();
            for (key, value) in &top.outputs {
                let ctx = ExprContext {
                    step: None,
                    upstream: &all,
                    known: &known,
                    item: false,
                };
                self.check_expressions(&join_key("outputs", key), value, &ctx);
            }
        }
    }

    fn check_top(&mut self, wf: &Workflow) {
        if !is_workflow_name(&wf.name) {
            self.report(
                "name",
                format!(
                    "workflow name `{}` is not valid: use lowercase letters, digits and `-`, starting with a letter or digit (at most 64)",
                    wf.name
                ),
            );
        }
        if self
            .doc
            .value
            .get("steps")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            self.report("steps", "a workflow needs at least one step");
        }
        if let Some(queue) = &wf.queue {
            self.check_queue("queue", queue);
        }
        if let Some(t) = wf.timeout {
            self.check_timeout("timeout", t);
        }
        for (name, spec) in &wf.inputs {
            if !is_identifier(name) {
                self.report(
                    join_key("inputs", name),
                    format!("input name `{name}` is not valid: use letters, digits and `_`, starting with a letter"),
                );
            }
            if let Some(default) = &spec.default {
                let ok = match spec.kind {
                    crate::definition::InputType::String => default.is_string(),
                    crate::definition::InputType::Number => default.is_number(),
                    crate::definition::InputType::Integer => default.is_i64() || default.is_u64(),
                    crate::definition::InputType::Boolean => default.is_boolean(),
                    crate::definition::InputType::Object => default.is_object(),
                    crate::definition::InputType::Array => default.is_array(),
                };
                if !ok {
                    self.report(
                        join_key(&join_key("inputs", name), "default"),
                        format!("default does not match the declared type `{:?}`", spec.kind)
                            .to_lowercase(),
                    );
                }
            }
        }
    }

    fn check_cycles(&mut self, parts: &Parts, edges: &[Vec<(usize, usize)>]) {
        // Iterative three-colour DFS; every back edge closes one cycle, reported once.
        let n = edges.len();
        let mut colour = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        let mut reported: HashSet<BTreeSet<usize>> = HashSet::new();
        for start in 0..n {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if *next < edges[node].len() {
                    let (target, need_index) = edges[node][*next];
                    *next += 1;
                    match colour[target] {
                        0 => {
                            colour[target] = 1;
                            stack.push((target, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|(s, _)| *s == target).unwrap_or(0);
                            let members: Vec<usize> =
                                stack[from..].iter().map(|(s, _)| *s).collect();
                            if reported.insert(members.iter().copied().collect()) {
                                // `needs` points from dependent to dependency; print in run order.
                                let mut names: Vec<&str> = members
                                    .iter()
                                    .rev()
                                    .map(|m| parts.steps[*m].1.id.as_str())
                                    .collect();
                                names.push(names[0]);
                                let (i, _) = parts.steps[node];
                                self.report(
                                    join_index(
                                        &join_key(&join_index("steps", i), "needs"),
                                        need_index,
                                    ),
                                    format!("steps form a cycle: {}", names.join(" → ")),
                                );
                            }
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
    }

    fn check_step(
        &mut self,
        i: usize,
        step: &Step,
        upstream: &HashSet<&str>,
        known: &HashSet<&str>,
        catalog: &dyn ActionCatalog,
    ) {
        let base = join_index("steps", i);
        let at = |key: &str| join_key(&base, key);

        match (&step.action, &step.emit) {
            (Some(_), Some(_)) => self.report(
                at("emit"),
                "a step has either `action` or `emit`, not both; split it into two steps",
            ),
            (None, None) => self.report(
                &base,
                "a step needs an `action` (e.g. `http.request`) or an `emit`",
            ),
            _ => {}
        }
        if let Some(action) = &step.action {
            self.check_action(&at("action"), action, step, catalog);
        }
        if step.emit.is_some() && (step.connection.is_some() || !step.with.is_empty()) {
            self.report(
                at(if step.connection.is_some() { "connection" } else { "with" }),
                "`connection` and `with` belong to `action` steps; an `emit` step takes `emit.data`",
            );
        }
        if let Some(conn) = &step.connection
            && !is_connection_name(conn)
        {
            self.report(
                at("connection"),
                format!("connection name `{conn}` is not valid: use lowercase letters, digits, `-` and `_`"),
            );
        }

        let ctx = ExprContext {
            step: Some(&step.id),
            upstream,
            known,
            item: step.for_each.is_some(),
        };
        let ctx_no_item = ExprContext { item: false, ..ctx };

        if let Some(cond) = &step.condition {
            self.check_expressions(&at("if"), &Value::String(cond.clone()), &ctx_no_item);
        }
        for (key, value) in &step.with {
            self.check_expressions(&join_key(&at("with"), key), value, &ctx);
        }
        if let Some(emit) = &step.emit {
            if !is_event_name(&emit.event) {
                self.report(
                    join_key(&at("emit"), "event"),
                    format!("event name `{}` is not valid: use lowercase letters, digits, `.`, `-` and `_`", emit.event),
                );
            }
            self.check_expressions(&join_key(&at("emit"), "data"), &emit.data, &ctx);
        }

        match &step.for_each {
            None => {
                if step.max_parallel.is_some() {
                    self.report(
                        at("max_parallel"),
                        "`max_parallel` only applies to steps with `for_each`",
                    );
                }
            }
            Some(Value::Array(_)) => {
                self.check_expressions(
                    &at("for_each"),
                    step.for_each.as_ref().unwrap_or(&Value::Null),
                    &ctx_no_item,
                );
            }
            Some(Value::String(s)) if is_single_expression(s) => {
                self.check_expressions(&at("for_each"), &Value::String(s.clone()), &ctx_no_item);
            }
            Some(_) => self.report(
                at("for_each"),
                "`for_each` must be one `{{ expression }}` that yields a list, or a literal list",
            ),
        }
        if let Some(p) = step.max_parallel
            && !(1..=MAX_PARALLEL).contains(&p)
        {
            self.report(
                at("max_parallel"),
                format!("`max_parallel` must be between 1 and {MAX_PARALLEL}"),
            );
        }

        if let Some(retry) = &step.retry {
            let rp = at("retry");
            if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
                self.report(
                    join_key(&rp, "max_attempts"),
                    format!(
                        "`max_attempts` must be between 1 and {MAX_ATTEMPTS} (1 means no retries)"
                    ),
                );
            }
            let initial = retry
                .initial
                .unwrap_or(crate::definition::RetryPolicy::DEFAULT_INITIAL);
            let max = retry
                .max
                .unwrap_or(crate::definition::RetryPolicy::DEFAULT_MAX);
            if retry.initial.is_some() && initial.get().is_zero() {
                self.report(
                    join_key(&rp, "initial"),
                    "`initial` must be greater than zero",
                );
            }
            if max < initial {
                self.report(
                    join_key(&rp, "max"),
                    format!("`max` ({max}) is shorter than `initial` ({initial})"),
                );
            }
            if let Some(m) = retry.multiplier
                && !(1.0..=10.0).contains(&m)
            {
                self.report(
                    join_key(&rp, "multiplier"),
                    "`multiplier` must be between 1.0 and 10.0",
                );
            }
        }
        if let Some(t) = step.timeout {
            self.check_timeout(&at("timeout"), t);
        }
        if let Some(queue) = &step.queue {
            self.check_queue(&at("queue"), queue);
        }
        if let Some(approval) = &step.approval {
            let ap = at("approval");
            if approval.required && approval.approvers.is_empty() {
                self.report(
                    &ap,
                    "an approval needs at least one approver, e.g. `approvers: [role:admin]`",
                );
            }
            for (j, who) in approval.approvers.iter().enumerate() {
                let valid = who.split_once(':').is_some_and(|(kind, name)| {
                    matches!(kind, "role" | "user") && !name.is_empty()
                });
                if !valid {
                    self.report(
                        join_index(&join_key(&ap, "approvers"), j),
                        format!("approver `{who}` must be written `role:<name>` or `user:<name>`"),
                    );
                }
            }
            if let Some(t) = approval.timeout {
                self.check_timeout(&join_key(&ap, "timeout"), t);
            }
        }
    }

    fn check_action(&mut self, path: &str, action: &str, step: &Step, catalog: &dyn ActionCatalog) {
        let Some((connector, name)) = action.split_once('.') else {
            self.report(path, format!("action `{action}` must be written `connector.action`, e.g. `slack.post_message`"));
            return;
        };
        let Some(info) = catalog.connector(connector) else {
            let names = catalog.connector_names();
            let hint = suggest(connector, names.iter().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            self.report(
                path,
                format!("unknown connector `{connector}` in `{action}`{hint}"),
            );
            return;
        };
        if !info.actions.is_empty() && !info.actions.iter().any(|a| a.name == name) {
            let hint = suggest(name, info.actions.iter().map(|a| a.name.as_str()))
                .map(|s| format!("did you mean `{connector}.{s}`?"))
                .unwrap_or_else(|| {
                    let all: Vec<&str> = info.actions.iter().map(|a| a.name.as_str()).collect();
                    format!("it has: {}", all.join(", "))
                });
            self.report(
                path,
                format!("connector `{connector}` has no action `{name}`; {hint}"),
            );
            return;
        }
        if info.requires_connection && step.connection.is_none() {
            self.report(
                path,
                format!("`{action}` needs a `connection` naming the {connector} account to use"),
            );
        }
    }

    fn check_trigger(&mut self, i: usize, trigger: &Trigger) {
        let base = join_index("triggers", i);
        match trigger {
            Trigger::Webhook(w) => {
                let at = join_key(&base, "webhook");
                if !is_connection_name(&w.id) {
                    self.report(
                        join_key(&at, "id"),
                        format!("webhook id `{}` is not valid: use lowercase letters, digits, `-` and `_`", w.id),
                    );
                }
                if let Some(n) = w.max_body_bytes
                    && !(1..=MAX_WEBHOOK_BODY_BYTES).contains(&n)
                {
                    self.report(
                        join_key(&at, "max_body_bytes"),
                        format!("`max_body_bytes` must be 1 to {MAX_WEBHOOK_BODY_BYTES} (16 MiB)"),
                    );
                }
                if let Some(limit) = &w.rate_limit
                    && (limit.requests == 0 || limit.per.get().is_zero())
                {
                    self.report(
                        join_key(&at, "rate_limit"),
                        "`rate_limit` needs `requests` and `per` greater than zero, e.g. `{ requests: 100, per: 1s }`",
                    );
                }
                match &w.signature {
                    None => self.report(
                        &at,
                        "a webhook needs a `signature`; to accept unsigned deliveries, say so with `signature: { scheme: none }`",
                    ),
                    Some(sig) => {
                        let sp = join_key(&at, "signature");
                        let secrets = sig.secret_names().count();
                        match sig.scheme {
                            SignatureScheme::None => {
                                if secrets > 0 || sig.tolerance.is_some() {
                                    self.report(&sp, "`scheme: none` verifies nothing, so it takes no secret and no tolerance");
                                }
                            }
                            scheme => {
                                if secrets == 0 {
                                    self.report(&sp, "this scheme needs `secret` (or `secrets` while rotating) naming a stored secret");
                                }
                                if scheme == SignatureScheme::HmacSha256 && sig.header.is_none() {
                                    self.report(&sp, "`hmac-sha256` needs `header`, the request header that carries the signature");
                                }
                                if scheme != SignatureScheme::HmacSha256
                                    && (sig.header.is_some() || sig.encoding.is_some() || sig.prefix.is_some())
                                {
                                    self.report(&sp, "`header`, `encoding` and `prefix` only apply to `hmac-sha256`");
                                }
                                if sig.tolerance.is_some()
                                    && !matches!(scheme, SignatureScheme::Stripe | SignatureScheme::Slack | SignatureScheme::Standard)
                                {
                                    self.report(&sp, "`tolerance` only applies to timestamped schemes: `stripe`, `slack` and `standard`");
                                }
                            }
                        }
                        for (j, name) in sig.secret_names().enumerate() {
                            if !is_connection_name(name) {
                                self.report(
                                    &sp,
                                    format!("secret name #{} `{name}` is not valid: use lowercase letters, digits, `-` and `_`", j + 1),
                                );
                            }
                        }
                    }
                }
            }
            Trigger::Event(e) => {
                let at = join_key(&base, "event");
                if !is_event_name(&e.name) {
                    self.report(
                        join_key(&at, "name"),
                        format!("event name `{}` is not valid: use lowercase letters, digits, `.`, `-` and `_`", e.name),
                    );
                }
                if let Some(cond) = &e.condition {
                    self.check_trigger_expression(&join_key(&at, "if"), cond, &["event"]);
                }
            }
            Trigger::Schedule(s) => {
                let at = join_key(&base, "schedule");
                if let Err(e) = s.parse_cron() {
                    self.report(join_key(&at, "cron"), e.to_string());
                }
                if let Some(tz) = &s.timezone
                    && tz.parse::<chrono_tz::Tz>().is_err()
                {
                    self.report(
                        join_key(&at, "timezone"),
                        format!("`{tz}` is not an IANA time zone (e.g. `Europe/Paris`, `America/New_York`, `UTC`)"),
                    );
                }
            }
        }
    }

    fn check_trigger_expression(&mut self, path: &str, text: &str, roots: &[&str]) {
        match expr::compile(text) {
            Err(e) => self.report(path, format!("expression error: {e}")),
            Ok(template) => {
                let refs = template.references();
                for root in &refs.roots {
                    if !roots.contains(&root.as_str()) {
                        self.report(
                            path,
                            format!(
                                "`{root}` is not defined here; a trigger condition can use: {}",
                                roots.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Compiles every expression in `value` and checks what it refers to.
    fn check_expressions(&mut self, path: &str, value: &Value, ctx: &ExprContext<'_>) {
        // Explicit stack: `with` blocks can be deeply nested user data.
        let mut todo: Vec<(String, &Value)> = vec![(path.to_owned(), value)];
        while let Some((path, value)) = todo.pop() {
            match value {
                Value::String(s) => self.check_expression(&path, s, ctx),
                Value::Array(items) => {
                    todo.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (join_index(&path, i), v)),
                    );
                }
                Value::Object(map) => {
                    todo.extend(map.iter().map(|(k, v)| (join_key(&path, k), v)));
                }
                _ => {}
            }
        }
    }

    fn check_expression(&mut self, path: &str, text: &str, ctx: &ExprContext<'_>) {
        if !expr::contains_expression(text) {
            return;
        }
        let template = match expr::compile(text) {
            Ok(t) => t,
            Err(e) => {
                self.report(path, format!("expression error: {e}"));
                return;
            }
        };
        let refs = template.references();
        for root in &refs.roots {
            let root = root.as_str();
            if root == "item" {
                if !ctx.item {
                    self.report(
                        path,
                        "`item` is only defined in the `with` (or `emit.data`) of a step with `for_each`",
                    );
                }
            } else if !ROOTS.contains(&root) {
                let mut roots: Vec<&str> = ROOTS.to_vec();
                if ctx.item {
                    roots.push("item");
                }
                let hint = suggest(root, roots.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                self.report(
                    path,
                    format!(
                        "`{root}` is not defined; {hint}expressions can use: {}",
                        roots.join(", ")
                    ),
                );
            }
        }
        for step in &refs.steps {
            let step = step.as_str();
            if Some(step) == ctx.step {
                self.report(path, format!("step `{step}` cannot read its own output"));
            } else if !ctx.known.contains(step) {
                self.report(
                    path,
                    format!("`steps.{step}` {}", unknown_step_message(step, ctx.known)),
                );
            } else if !ctx.upstream.contains(step) {
                self.report(
                    path,
                    format!(
                        "`steps.{step}` is not upstream of step `{}`: add `{step}` to its `needs` (directly or through another step)",
                        ctx.step.unwrap_or_default()
                    ),
                );
            }
        }
    }

    fn check_timeout(&mut self, path: &str, t: Duration) {
        if t.get().is_zero() {
            self.report(path, "a timeout must be greater than zero");
        } else if t > MAX_TIMEOUT {
            self.report(path, format!("a timeout may be at most {MAX_TIMEOUT}"));
        }
    }

    fn check_queue(&mut self, path: &str, queue: &str) {
        if !is_connection_name(queue) {
            self.report(
                path,
                format!(
                    "queue name `{queue}` is not valid: use lowercase letters, digits, `-` and `_`"
                ),
            );
        }
    }
}

#[derive(Clone, Copy)]
struct ExprContext<'a> {
    /// The step whose expressions these are (`None` for workflow outputs).
    step: Option<&'a str>,
    /// Steps whose output is available.
    upstream: &'a HashSet<&'a str>,
    /// Every step id.
    known: &'a HashSet<&'a str>,
    /// Whether `item` is in scope.
    item: bool,
}

fn unknown_step_message(name: &str, known: &HashSet<&str>) -> String {
    match suggest(name, known.iter().copied()) {
        Some(s) => format!("refers to unknown step `{name}`; did you mean `{s}`?"),
        None => format!("refers to unknown step `{name}`"),
    }
}

/// Transitive dependencies of each step (indices into the step list).
fn upstream_sets(edges: &[Vec<(usize, usize)>]) -> Vec<HashSet<usize>> {
    (0..edges.len())
        .map(|start| {
            let mut seen = HashSet::new();
            let mut todo: Vec<usize> = edges[start].iter().map(|(t, _)| *t).collect();
            while let Some(n) = todo.pop() {
                if n != start && seen.insert(n) {
                    todo.extend(edges[n].iter().map(|(t, _)| *t));
                }
            }
            seen
        })
        .collect()
}

/// Whether `s` is exactly one `{{ … }}` (so its value keeps its JSON type).
fn is_single_expression(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1
}

fn describe_serde_error(message: &str) -> String {
    // serde says "unknown variant `x`, expected one of …"; in a trigger list the variant is
    // the trigger kind, which a person calls a trigger type.
    message.replace("unknown variant", "unknown kind")
}

fn is_workflow_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn is_step_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` may name a connection or a stored secret: 1 to 64 of lowercase letters,
/// digits, `-` and `_`, starting with a letter or digit.
pub fn is_connection_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `s` may name an event: 1 to 128 of lowercase letters, digits, `.`, `-` and `_`,
/// starting with a letter or digit, with no empty `.`-separated part (event names become
/// NATS subjects).
pub fn is_event_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && !s.ends_with('.')
        && !s.contains("..")
}

#[cfg(test)]
mod tests;
