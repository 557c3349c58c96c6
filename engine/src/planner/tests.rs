use serde_json::json;

use super::*;
use schemas::catalog::AnyAction;

fn workflow(yaml: &str) -> Workflow {
    schemas::validate::validate(yaml, &AnyAction).unwrap_or_else(|p| panic!("{p}"))
}

fn state<'a>(wf: &'a Workflow, steps: &[(&str, StepState)]) -> RunState<'a> {
    RunState {
        workflow: wf,
        scope: Scope::new()
            .with_trigger(json!({ "body": { "items": [1, 2, 3], "flag": true, "email": "a@b.c" } }))
            .with_inputs(json!({})),
        steps: steps
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        gated_actions: &[],
    }
}

fn dispatched(decisions: &[Decision]) -> Vec<(String, Option<u32>)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Dispatch {
                step_id,
                item_index,
                ..
            } => Some((step_id.clone(), *item_index)),
            _ => None,
        })
        .collect()
}

const DIAMOND: &str = "name: d\nsteps:\n  - { id: a, action: http.request, with: { url: \"{{ trigger.body.email }}\" } }\n  - { id: b, needs: [a], action: http.request, with: { x: \"{{ steps.a.output.n }}\" } }\n  - { id: c, needs: [a], action: http.request }\n  - { id: d, needs: [b, c], action: http.request }\noutputs: { total: \"{{ steps.b.output.n + steps.c.output.n }}\" }\n";

#[test]
fn roots_are_dispatched_first_with_rendered_inputs() {
    let wf = workflow(DIAMOND);
    let decisions = plan(&state(&wf, &[]));
    assert_eq!(
        decisions,
        vec![Decision::Dispatch {
            step_id: "a".into(),
            item_index: None,
            input: json!({ "url": "a@b.c" })
        }]
    );
}

#[test]
fn a_diamond_fans_out_then_joins() {
    let wf = workflow(DIAMOND);
    let after_a = plan(&state(
        &wf,
        &[("a", StepState::Succeeded(json!({ "n": 2 })))],
    ));
    assert_eq!(
        dispatched(&after_a),
        vec![("b".into(), None), ("c".into(), None)]
    );
    match &after_a[0] {
        Decision::Dispatch { input, .. } => assert_eq!(input, &json!({ "x": 2 })),
        other => panic!("{other:?}"),
    }
    let only_b = plan(&state(
        &wf,
        &[
            ("a", StepState::Succeeded(json!({ "n": 2 }))),
            ("b", StepState::Succeeded(json!({ "n": 3 }))),
            ("c", StepState::InFlight),
        ],
    ));
    assert!(only_b.is_empty(), "d waits for c: {only_b:?}");
    let all = [
        ("a", StepState::Succeeded(json!({ "n": 2 }))),
        ("b", StepState::Succeeded(json!({ "n": 3 }))),
        ("c", StepState::Succeeded(json!({ "n": 4 }))),
        ("d", StepState::Succeeded(json!({}))),
    ];
    assert_eq!(
        plan(&state(&wf, &all)),
        vec![Decision::FinishRun(RunOutcome::Succeeded {
            outputs: json!({ "total": 7 })
        })]
    );
}

#[test]
fn in_flight_steps_are_not_dispatched_again() {
    let wf = workflow(DIAMOND);
    assert!(plan(&state(&wf, &[("a", StepState::InFlight)])).is_empty());
}

#[test]
fn false_condition_skips_and_skips_propagate_unless_allowed() {
    let wf = workflow(
        "name: s\nsteps:\n  - { id: a, action: http.request, if: \"{{ not trigger.body.flag }}\" }\n  - { id: b, needs: [a], action: http.request }\n  - { id: c, needs: [b], action: http.request, allow_skipped_needs: true }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    assert_eq!(
        decisions,
        vec![
            Decision::Skip {
                step_id: "a".into()
            },
            Decision::Skip {
                step_id: "b".into()
            },
            Decision::Dispatch {
                step_id: "c".into(),
                item_index: None,
                input: json!({})
            },
        ]
    );
}

#[test]
fn a_run_of_only_skipped_steps_succeeds() {
    let wf = workflow(
        "name: s\nsteps:\n  - { id: a, action: http.request, if: \"{{ trigger.body.missing }}\" }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    assert_eq!(decisions.len(), 2);
    assert!(matches!(
        decisions[1],
        Decision::FinishRun(RunOutcome::Succeeded { .. })
    ));
}

#[test]
fn for_each_respects_max_parallel_and_joins_in_item_order() {
    let wf = workflow(
        "name: f\nsteps:\n  - id: each\n    for_each: \"{{ trigger.body.items }}\"\n    max_parallel: 2\n    action: http.request\n    with: { n: \"{{ item }}\" }\n",
    );
    let first = plan(&state(&wf, &[]));
    assert!(matches!(&first[0], Decision::FanOut { items, .. } if items.len() == 3));
    assert_eq!(
        dispatched(&first),
        vec![("each".into(), Some(0)), ("each".into(), Some(1))]
    );
    match &first[1] {
        Decision::Dispatch { input, .. } => assert_eq!(input, &json!({ "n": 1 })),
        other => panic!("{other:?}"),
    }

    let item = |v: i64, state: StepState| Item {
        value: json!(v),
        state,
    };
    let second = plan(&state(
        &wf,
        &[(
            "each",
            StepState::FannedOut(vec![
                item(1, StepState::Succeeded(json!("one"))),
                item(2, StepState::InFlight),
                item(3, StepState::Pending),
            ]),
        )],
    ));
    assert_eq!(dispatched(&second), vec![("each".into(), Some(2))]);

    let done = plan(&state(
        &wf,
        &[(
            "each",
            StepState::FannedOut(vec![
                item(1, StepState::Succeeded(json!("one"))),
                item(2, StepState::Succeeded(json!("two"))),
                item(3, StepState::Succeeded(json!("three"))),
            ]),
        )],
    ));
    assert_eq!(
        done[0],
        Decision::Complete {
            step_id: "each".into(),
            output: json!(["one", "two", "three"])
        }
    );
    assert!(matches!(
        done[1],
        Decision::FinishRun(RunOutcome::Succeeded { .. })
    ));
}

#[test]
fn empty_for_each_completes_without_dispatch() {
    let wf = workflow(
        "name: f\nsteps:\n  - { id: each, for_each: [], action: http.request }\n  - { id: next, needs: [each], action: http.request }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    assert_eq!(
        decisions[0],
        Decision::Complete {
            step_id: "each".into(),
            output: json!([])
        }
    );
    assert_eq!(dispatched(&decisions), vec![("next".into(), None)]);
}

#[test]
fn for_each_over_a_non_list_fails_the_run() {
    let wf = workflow(
        "name: f\nsteps:\n  - { id: each, for_each: \"{{ trigger.body.flag }}\", action: http.request }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    assert!(
        matches!(&decisions[0], Decision::Fail { error, .. } if error.message.contains("got a boolean"))
    );
    assert!(
        matches!(&decisions[1], Decision::FinishRun(RunOutcome::Failed { step_id: Some(id), .. }) if id == "each")
    );
}

#[test]
fn emit_steps_complete_in_the_engine() {
    let wf = workflow(
        "name: e\nsteps:\n  - { id: tell, emit: { event: lead.done, data: { who: \"{{ trigger.body.email }}\" } } }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    assert_eq!(
        decisions[0],
        Decision::Emit {
            step_id: "tell".into(),
            event: "lead.done".into(),
            data: json!({ "who": "a@b.c" })
        }
    );
    assert!(matches!(
        decisions[1],
        Decision::FinishRun(RunOutcome::Succeeded { .. })
    ));
}

#[test]
fn a_failed_step_fails_the_run_and_starts_nothing_else() {
    let wf = workflow(DIAMOND);
    let error = StepError {
        http_status: None,
        code: ErrorCode::InvalidInput,
        message: "bad".into(),
        retry_after_ms: None,
    };
    let decisions = plan(&state(
        &wf,
        &[
            ("a", StepState::Succeeded(json!({ "n": 1 }))),
            ("b", StepState::Failed(error.clone())),
        ],
    ));
    assert_eq!(
        decisions,
        vec![Decision::FinishRun(RunOutcome::Failed {
            step_id: Some("b".into()),
            error
        })]
    );
}

#[test]
fn input_expression_errors_fail_the_step_with_invalid_input() {
    let wf = workflow(
        "name: x\nsteps:\n  - { id: a, action: http.request, with: { u: \"{{ trigger.body.nope.deeper }}\" } }\n",
    );
    let decisions = plan(&state(&wf, &[]));
    match &decisions[0] {
        Decision::Fail { error, .. } => {
            assert_eq!(error.code, ErrorCode::InvalidInput);
            assert!(error.message.contains("with.u"), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_ten_step_chain_advances_one_step_at_a_time() {
    let mut yaml = String::from("name: chain\nsteps:\n  - { id: s0, action: http.request }\n");
    for i in 1..10 {
        yaml.push_str(&format!(
            "  - {{ id: s{i}, needs: [s{}], action: http.request }}\n",
            i - 1
        ));
    }
    let wf = workflow(&yaml);
    let mut done: Vec<(String, StepState)> = Vec::new();
    for i in 0..10 {
        let refs: Vec<(&str, StepState)> =
            done.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let decisions = plan(&state(&wf, &refs));
        assert_eq!(dispatched(&decisions), vec![(format!("s{i}"), None)]);
        done.push((format!("s{i}"), StepState::Succeeded(json!(i))));
    }
    let refs: Vec<(&str, StepState)> = done.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert!(matches!(
        plan(&state(&wf, &refs))[..],
        [Decision::FinishRun(RunOutcome::Succeeded { .. })]
    ));
}

#[test]
fn a_gated_step_is_held_with_its_rendered_inputs_until_approved() {
    let wf = workflow(
        "name: g\nsteps:\n  - { id: a, action: http.request }\n  - { id: b, needs: [a], action: http.request, approval: { approvers: [\"role:admin\"] }, with: { url: \"{{ trigger.body.email }}\" } }\n",
    );
    let held = plan(&state(&wf, &[("a", StepState::Succeeded(json!({})))]));
    assert_eq!(
        held,
        [Decision::AwaitApproval {
            step_id: "b".into(),
            input: json!({ "url": "a@b.c" }),
        }]
    );
    let waiting = plan(&state(
        &wf,
        &[
            ("a", StepState::Succeeded(json!({}))),
            ("b", StepState::AwaitingApproval),
        ],
    ));
    assert!(waiting.is_empty(), "{waiting:?}");
    let approved = plan(&state(
        &wf,
        &[
            ("a", StepState::Succeeded(json!({}))),
            ("b", StepState::Approved),
        ],
    ));
    assert_eq!(dispatched(&approved), [("b".to_owned(), None)]);
}

#[test]
fn destructive_actions_are_gated_even_when_the_step_says_otherwise() {
    let wf = workflow(
        "name: g\nsteps:\n  - { id: close, action: github.close_issue, approval: { required: false } }\n  - { id: read, action: http.request }\n",
    );
    let close = wf
        .steps
        .iter()
        .find(|s| s.id == "close")
        .map(|s| needs_approval(s, &[]));
    let read = wf.steps.iter().find(|s| s.id == "read");
    assert_eq!(
        (close, read.map(|s| needs_approval(s, &[]))),
        (Some(true), Some(false))
    );
    // The workspace's policy can gate any action.
    let gated = ["http.request".to_owned()];
    assert_eq!(read.map(|s| needs_approval(s, &gated)), Some(true));
}
