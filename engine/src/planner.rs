//! Decides what happens next in a run, from the definition and the state of its steps.
//!
//! The planner is pure: it reads a [`RunState`] and returns [`Decision`]s, and the caller
//! applies them inside the same database transaction that recorded whatever changed. Keeping
//! the DAG semantics here, away from SQL and NATS, means every rule below is unit-tested
//! directly and every engine copy decides identically.
//!
//! # Rules
//! - A step is **ready** when every step in its `needs` is finished (succeeded or skipped).
//! - A need that was **skipped** skips the step too, unless it sets `allow_skipped_needs`.
//! - `if` is evaluated once, when the step is ready; false (or a missing value tested only for
//!   truth) skips it. An expression error fails the step with `invalid_input`.
//! - `emit` steps complete in the engine itself: the event is recorded and published.
//! - `for_each` evaluates to a list; an empty list completes the step with `[]`. Otherwise one
//!   instance per item is created and at most `max_parallel` (default 10) run at once; the step
//!   succeeds with the list of item outputs, in item order, when every item has.
//! - The first step (or item) that fails for good fails the run: steps not started are
//!   cancelled, and steps in flight are told to stop.
//! - When every step is finished the run succeeds and `outputs` are rendered; an output
//!   expression that cannot be rendered fails the run with `invalid_input`.
//! - A ready step with an approval gate (`approval`, or an action its manifest marks
//!   `destructive`) is held ([`Decision::AwaitApproval`], with what it would do) instead of
//!   being started; once approved it starts as any ready step would.

use std::collections::HashMap;

use schemas::definition::{Step, Workflow};
use schemas::envelope::{ErrorCode, MAX_EVENT_DEPTH, StepError};
use schemas::expr::{self, Scope};
use serde_json::Value;

/// Default number of `for_each` items in flight at once.
pub const DEFAULT_MAX_PARALLEL: u32 = 10;
/// Most items one `for_each` may produce.
pub const MAX_ITEMS: usize = 10_000;

/// Where one step stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StepState {
    /// Not started.
    Pending,
    /// Sent to workers (or waiting for a retry); its outcome is not known yet.
    InFlight,
    /// Finished with this output.
    Succeeded(Value),
    /// Finished with this error, for good (retries are decided before the planner runs).
    Failed(StepError),
    /// Not run because of `if` or a skipped need.
    Skipped,
    /// Not run, or stopped, because the run ended.
    Cancelled,
    /// A `for_each` step whose items were created, in item order.
    FannedOut(Vec<Item>),
    /// Ready, and held at its approval gate.
    AwaitingApproval,
    /// Its gate was approved: it starts as a ready step would.
    Approved,
}

/// One item of a fanned-out step.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The element of the `for_each` list, `item` in expressions.
    pub value: Value,
    /// Where this item's instance stands (never `FannedOut`).
    pub state: StepState,
}

impl StepState {
    /// Whether nothing more will happen to this step.
    pub fn is_finished(&self) -> bool {
        match self {
            StepState::Succeeded(_)
            | StepState::Failed(_)
            | StepState::Skipped
            | StepState::Cancelled => true,
            StepState::Pending
            | StepState::InFlight
            | StepState::AwaitingApproval
            | StepState::Approved => false,
            StepState::FannedOut(items) => items.iter().all(|i| i.state.is_finished()),
        }
    }
}

/// Everything the planner reads about a run.
#[derive(Debug, Clone)]
pub struct RunState<'a> {
    /// The pinned definition version.
    pub workflow: &'a Workflow,
    /// `trigger`, `event`, `inputs` and `run` for expressions (its `steps` are filled in here).
    pub scope: Scope,
    /// State of each step by id; a step with no entry is pending.
    pub steps: HashMap<String, StepState>,
    /// Actions (`connector.action`) the workspace's policy sends to approval.
    pub gated_actions: &'a [String],
}

/// Something the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send a step (or one item of it) to the workers with these rendered inputs.
    Dispatch {
        /// Step id.
        step_id: String,
        /// Item index for `for_each` instances.
        item_index: Option<u32>,
        /// Rendered `with`.
        input: Value,
    },
    /// Create the item instances of a `for_each` step.
    FanOut {
        /// Step id.
        step_id: String,
        /// The items, in order.
        items: Vec<Value>,
    },
    /// Mark a step succeeded without sending it anywhere (empty fan-out, joined fan-out).
    Complete {
        /// Step id.
        step_id: String,
        /// Its output.
        output: Value,
    },
    /// Publish an event for an `emit` step and mark the step succeeded.
    Emit {
        /// Step id.
        step_id: String,
        /// Event name.
        event: String,
        /// Rendered payload.
        data: Value,
    },
    /// Hold a step at its approval gate; `input` is what it would be started with (the
    /// rendered `with`, the `for_each` items, or the event data).
    AwaitApproval {
        /// Step id.
        step_id: String,
        /// What approving would start.
        input: Value,
    },
    /// Mark a step skipped.
    Skip {
        /// Step id.
        step_id: String,
    },
    /// Mark a step (or one item of it) failed, e.g. its expressions could not be evaluated.
    Fail {
        /// Step id.
        step_id: String,
        /// Item index for `for_each` instances.
        item_index: Option<u32>,
        /// Why.
        error: StepError,
    },
    /// The run is over.
    FinishRun(RunOutcome),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Every step finished and outputs rendered.
    Succeeded {
        /// Rendered `outputs`.
        outputs: Value,
    },
    /// A step failed for good, or outputs could not be rendered. Steps that have not finished
    /// must be cancelled.
    Failed {
        /// The step that failed (none when outputs failed to render).
        step_id: Option<String>,
        /// Why.
        error: StepError,
    },
}

/// Plans the run to a fixpoint: decisions that finish steps without workers (skips, emits,
/// empty fan-outs, joins) are applied to the in-memory state and planning continues, so one
/// call returns everything that can happen until a worker reports back.
pub fn plan(state: &RunState<'_>) -> Vec<Decision> {
    let mut steps = state.steps.clone();
    let mut decisions = Vec::new();
    loop {
        // A failure anywhere ends the run; nothing else is started.
        if let Some((id, error)) = first_failure(state.workflow, &steps) {
            decisions.push(Decision::FinishRun(RunOutcome::Failed {
                step_id: Some(id),
                error,
            }));
            return decisions;
        }
        let mut progressed = false;
        for step in &state.workflow.steps {
            match steps.get(&step.id).cloned().unwrap_or(StepState::Pending) {
                st @ (StepState::Pending | StepState::Approved) => {
                    let approved = st == StepState::Approved;
                    if let Some(d) =
                        start_step(step, &steps, &state.scope, approved, state.gated_actions)
                    {
                        progressed |= apply(&mut steps, &d);
                        decisions.push(d);
                    }
                }
                StepState::FannedOut(items) => {
                    progressed |=
                        advance_fan_out(step, items, &mut steps, &state.scope, &mut decisions);
                }
                _ => {}
            }
        }
        if !progressed {
            break;
        }
    }
    if state
        .workflow
        .steps
        .iter()
        .all(|s| steps.get(&s.id).is_some_and(StepState::is_finished))
    {
        decisions.push(Decision::FinishRun(finish(state, &steps)));
    }
    decisions
}

/// Dispatches pending items up to `max_parallel`, and joins the step when every item succeeded.
fn advance_fan_out(
    step: &Step,
    mut items: Vec<Item>,
    steps: &mut HashMap<String, StepState>,
    base: &Scope,
    decisions: &mut Vec<Decision>,
) -> bool {
    if items
        .iter()
        .all(|i| matches!(i.state, StepState::Succeeded(_)))
    {
        let output = Value::Array(
            items
                .into_iter()
                .map(|i| match i.state {
                    StepState::Succeeded(v) => v,
                    _ => Value::Null,
                })
                .collect(),
        );
        let d = Decision::Complete {
            step_id: step.id.clone(),
            output,
        };
        apply(steps, &d);
        decisions.push(d);
        return true;
    }
    let max = step.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL) as usize;
    let mut in_flight = items
        .iter()
        .filter(|i| i.state == StepState::InFlight)
        .count();
    let scope = scope_for(base, steps);
    let mut failed = false;
    for (index, item) in items.iter_mut().enumerate() {
        if in_flight >= max {
            break;
        }
        if item.state != StepState::Pending {
            continue;
        }
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let d = render_dispatch(
            step,
            Some(index),
            &scope.clone().with_item(item.value.clone()),
        );
        match &d {
            Decision::Dispatch { .. } => {
                item.state = StepState::InFlight;
                in_flight += 1;
            }
            Decision::Fail { error, .. } => {
                item.state = StepState::Failed(error.clone());
                failed = true;
            }
            _ => {}
        }
        decisions.push(d);
        if failed {
            break;
        }
    }
    steps.insert(step.id.clone(), StepState::FannedOut(items));
    failed
}

/// Applies a decision that finishes a step in memory; returns whether planning should go on.
fn apply(steps: &mut HashMap<String, StepState>, d: &Decision) -> bool {
    match d {
        Decision::Complete { step_id, output } => {
            steps.insert(step_id.clone(), StepState::Succeeded(output.clone()));
            true
        }
        Decision::Emit { step_id, event, .. } => {
            steps.insert(
                step_id.clone(),
                StepState::Succeeded(serde_json::json!({ "event": event })),
            );
            true
        }
        Decision::Skip { step_id } => {
            steps.insert(step_id.clone(), StepState::Skipped);
            true
        }
        Decision::AwaitApproval { step_id, .. } => {
            steps.insert(step_id.clone(), StepState::AwaitingApproval);
            false
        }
        Decision::Fail {
            step_id,
            item_index: None,
            error,
        } => {
            steps.insert(step_id.clone(), StepState::Failed(error.clone()));
            true
        }
        Decision::Fail { .. } => true,
        Decision::FanOut { step_id, items } => {
            let items = items
                .iter()
                .map(|v| Item {
                    value: v.clone(),
                    state: StepState::Pending,
                })
                .collect();
            steps.insert(step_id.clone(), StepState::FannedOut(items));
            true
        }
        Decision::Dispatch {
            step_id,
            item_index: None,
            ..
        } => {
            steps.insert(step_id.clone(), StepState::InFlight);
            false
        }
        Decision::Dispatch { .. } | Decision::FinishRun(_) => false,
    }
}

fn first_failure(wf: &Workflow, steps: &HashMap<String, StepState>) -> Option<(String, StepError)> {
    wf.steps.iter().find_map(|s| match steps.get(&s.id) {
        Some(StepState::Failed(e)) => Some((s.id.clone(), e.clone())),
        Some(StepState::FannedOut(items)) => items.iter().find_map(|i| match &i.state {
            StepState::Failed(e) => Some((s.id.clone(), e.clone())),
            _ => None,
        }),
        _ => None,
    })
}

/// The scope a step's expressions see: the run's roots plus every succeeded step's output.
fn scope_for(base: &Scope, steps: &HashMap<String, StepState>) -> Scope {
    let mut scope = base.clone();
    for (id, st) in steps {
        if let StepState::Succeeded(output) = st {
            scope = scope.with_step_output(id.clone(), output.clone());
        }
    }
    scope
}

/// A run's place in a chain of event-triggered runs: 0 unless an event started it, else one
/// more than the event's depth. Events the run emits carry this depth.
pub fn run_depth(trigger: &Value) -> u32 {
    trigger
        .get("depth")
        .and_then(Value::as_u64)
        .map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX))
}

fn invalid(message: String) -> StepError {
    StepError {
        http_status: None,
        code: ErrorCode::InvalidInput,
        message,
        retry_after_ms: None,
    }
}

/// Whether a step must be approved before it starts: its definition asks for it, its action
/// is one the workspace's policy lists in `gated`, or one its connector's manifest marks
/// destructive. The last two are the workspace's rules, not the author's: `required: false`
/// lifts neither.
pub fn needs_approval(step: &Step, gated: &[String]) -> bool {
    if step.approval.as_ref().is_some_and(|a| a.required) {
        return true;
    }
    if step
        .action
        .as_deref()
        .is_some_and(|a| gated.iter().any(|g| g == a))
    {
        return true;
    }
    step.action
        .as_deref()
        .and_then(|a| a.split_once('.'))
        .and_then(|(connector, action)| {
            connectors::Registry::builtin()
                .get(connector)
                .and_then(|m| m.find_action(action))
                .map(|a| a.side_effect == schemas::catalog::SideEffect::Destructive)
        })
        .unwrap_or(false)
}

/// What to do with a pending step whose needs may or may not be finished; a step with an
/// approval gate that is not yet `approved` is held instead of started.
fn start_step(
    step: &Step,
    steps: &HashMap<String, StepState>,
    base: &Scope,
    approved: bool,
    gated: &[String],
) -> Option<Decision> {
    let decision = ready_step(step, steps, base)?;
    if approved || !needs_approval(step, gated) {
        return Some(decision);
    }
    Some(match decision {
        Decision::Dispatch { input, .. } => Decision::AwaitApproval {
            step_id: step.id.clone(),
            input,
        },
        Decision::FanOut { items, .. } => Decision::AwaitApproval {
            step_id: step.id.clone(),
            input: Value::Array(items),
        },
        Decision::Emit { data, .. } => Decision::AwaitApproval {
            step_id: step.id.clone(),
            input: data,
        },
        // Skipped, failed or empty: there is nothing to approve.
        other => other,
    })
}

/// What starting a pending step means, once its needs are finished.
fn ready_step(step: &Step, steps: &HashMap<String, StepState>, base: &Scope) -> Option<Decision> {
    let mut any_skipped = false;
    for need in &step.needs {
        match steps.get(need) {
            Some(StepState::Succeeded(_)) => {}
            Some(StepState::Skipped) => any_skipped = true,
            _ => return None,
        }
    }
    let skip = || Decision::Skip {
        step_id: step.id.clone(),
    };
    if any_skipped && !step.allow_skipped_needs {
        return Some(skip());
    }
    let scope = scope_for(base, steps);
    if let Some(cond) = &step.condition {
        let verdict = expr::compile(cond).and_then(|t| t.evaluate_condition(&scope));
        match verdict {
            Ok(true) => {}
            Ok(false) => return Some(skip()),
            Err(e) => {
                return Some(Decision::Fail {
                    step_id: step.id.clone(),
                    item_index: None,
                    error: invalid(format!("`if`: {e}")),
                });
            }
        }
    }
    if let Some(for_each) = &step.for_each {
        let items = match expr::render_value(for_each, &scope) {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                return Some(Decision::Fail {
                    step_id: step.id.clone(),
                    item_index: None,
                    error: invalid(format!(
                        "`for_each` must yield a list, got {}",
                        json_kind(&other)
                    )),
                });
            }
            Err(e) => {
                return Some(Decision::Fail {
                    step_id: step.id.clone(),
                    item_index: None,
                    error: invalid(format!("`for_each`: {e}")),
                });
            }
        };
        if items.len() > MAX_ITEMS {
            return Some(Decision::Fail {
                step_id: step.id.clone(),
                item_index: None,
                error: invalid(format!(
                    "`for_each` yielded {} items; the limit is {MAX_ITEMS}",
                    items.len()
                )),
            });
        }
        if items.is_empty() {
            return Some(Decision::Complete {
                step_id: step.id.clone(),
                output: Value::Array(Vec::new()),
            });
        }
        return Some(Decision::FanOut {
            step_id: step.id.clone(),
            items,
        });
    }
    if let Some(emit) = &step.emit {
        let depth = scope.trigger.as_ref().map_or(0, run_depth);
        if depth >= MAX_EVENT_DEPTH {
            return Some(Decision::Fail {
                step_id: step.id.clone(),
                item_index: None,
                error: StepError {
                    http_status: None,
                    code: ErrorCode::EventDepthExceeded,
                    message: format!(
                        "emitting `{}` would start a chain of event-triggered runs deeper than {MAX_EVENT_DEPTH}; \
                         this run was itself started by a chain of {depth} events, so workflows probably trigger each other in a loop",
                        emit.event
                    ),
                    retry_after_ms: None,
                },
            });
        }
        return Some(match expr::render_value(&emit.data, &scope) {
            Ok(data) => Decision::Emit {
                step_id: step.id.clone(),
                event: emit.event.clone(),
                data,
            },
            Err(e) => Decision::Fail {
                step_id: step.id.clone(),
                item_index: None,
                error: invalid(format!("`emit.data`: {}", e.within("emit.data"))),
            },
        });
    }
    Some(render_dispatch(step, None, &scope))
}

fn render_dispatch(step: &Step, item_index: Option<u32>, scope: &Scope) -> Decision {
    let with = Value::Object(step.with.clone());
    match expr::render_value(&with, scope) {
        Ok(input) => Decision::Dispatch {
            step_id: step.id.clone(),
            item_index,
            input,
        },
        Err(e) => Decision::Fail {
            step_id: step.id.clone(),
            item_index,
            error: invalid(e.within("with").to_string()),
        },
    }
}

fn finish(state: &RunState<'_>, steps: &HashMap<String, StepState>) -> RunOutcome {
    let scope = scope_for(&state.scope, steps);
    let outputs = Value::Object(state.workflow.outputs.clone());
    match expr::render_value(&outputs, &scope) {
        Ok(outputs) => RunOutcome::Succeeded { outputs },
        Err(e) => RunOutcome::Failed {
            step_id: None,
            error: invalid(format!("`outputs`: {}", e.within("outputs"))),
        },
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
