use proptest::prelude::*;

use super::*;
use crate::catalog::{ActionInfo, ConnectorInfo, SideEffect, StaticCatalog};

fn catalog() -> StaticCatalog {
    let connector = |name: &str, requires_connection: bool, actions: &[&str]| ConnectorInfo {
        name: name.into(),
        requires_connection,
        actions: actions
            .iter()
            .map(|a| ActionInfo {
                name: (*a).into(),
                side_effect: SideEffect::Write,
            })
            .collect(),
    };
    StaticCatalog(vec![
        connector("http", false, &["request"]),
        connector("slack", true, &["post_message", "chat_update"]),
        connector("sheets", true, &["append_row", "read_range"]),
    ])
}

fn problems(text: &str) -> Vec<Problem> {
    match validate(text, &catalog()) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(Problems(p)) => p,
    }
}

/// Asserts one problem at `path` with `line:col` whose message contains `needle`.
#[track_caller]
fn assert_problem(all: &[Problem], path: &str, line: usize, column: usize, needle: &str) {
    let found = all.iter().any(|p| {
        p.path == path && p.pos.line == line && p.pos.column == column && p.message.contains(needle)
    });
    assert!(
        found,
        "no problem at {path} {line}:{column} containing {needle:?}; got:\n{}",
        Problems(all.to_vec())
    );
}

const ISSUE_EXAMPLE: &str = r##"
name: lead-intake
description: New CRM leads are enriched, announced and recorded
triggers:
  - webhook: { id: crm, signature: { scheme: github, secret: crm-webhook-secret } }
  - event:   { name: lead.created, if: "{{ event.data.score > 50 }}" }
  - schedule: { cron: "0 9 * * MON-FRI", timezone: Europe/Paris }
steps:
  - id: enrich
    action: http.request
    with: { method: GET, url: "https://api.example.com/people?email={{ trigger.body.email | urlencode }}" }
    retry: { max_attempts: 5, initial: 1s, max: 1m }
    timeout: 30s
  - id: announce
    needs: [enrich]
    if: "{{ steps.enrich.output.status == 200 }}"
    action: slack.post_message
    connection: slack-sales
    with: { channel: "#sales", text: "New lead {{ steps.enrich.output.body.name }}" }
  - id: record
    needs: [enrich]
    for_each: "{{ trigger.body.items }}"
    max_parallel: 10
    action: sheets.append_row
    connection: sales-sheet
    with: { values: ["{{ item.sku }}", "{{ item.qty }}"] }
  - id: done
    needs: [announce, record]
    emit: { event: lead.processed, data: { email: "{{ trigger.body.email }}" } }
    approval: { required: true, approvers: [role:sales-manager], timeout: 24h }
outputs: { name: "{{ steps.enrich.output.body.name }}" }
"##;

#[test]
fn the_reference_example_is_valid() {
    let wf = validate(ISSUE_EXAMPLE, &catalog()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(wf.name, "lead-intake");
    assert_eq!(wf.steps.len(), 4);
    assert_eq!(wf.triggers.len(), 3);
    assert_eq!(wf.steps[0].timeout, Some(Duration::from_secs(30)));
}

#[test]
fn json_definitions_are_validated_with_positions() {
    let text = "{\n  \"name\": \"j\",\n  \"steps\": [\n    {\"id\": \"a\", \"needs\": [\"zz\"], \"emit\": {\"event\": \"x\"}}\n  ]\n}\n";
    let all = problems(text);
    assert_problem(&all, "steps[0].needs[0]", 4, 27, "unknown step `zz`");
}

#[test]
fn unknown_needs_are_reported_with_a_suggestion() {
    let all = problems(
        "name: a\nsteps:\n  - id: fetch\n    action: http.request\n  - id: send\n    needs: [fetc]\n    action: http.request\n",
    );
    assert_problem(&all, "steps[1].needs[0]", 6, 13, "did you mean `fetch`?");
}

#[test]
fn duplicate_step_ids_name_the_first_line() {
    let all = problems(
        "name: a\nsteps:\n  - id: x\n    action: http.request\n  - id: x\n    action: http.request\n",
    );
    assert_problem(
        &all,
        "steps[1].id",
        5,
        9,
        "duplicate step id `x` (first used at line 3)",
    );
}

#[test]
fn a_cycle_names_every_step_on_it() {
    let text = "name: a\nsteps:\n  - id: a\n    needs: [c]\n    action: http.request\n  - id: b\n    needs: [a]\n    action: http.request\n  - id: c\n    needs: [b]\n    action: http.request\n";
    let all = problems(text);
    let cycle: Vec<_> = all.iter().filter(|p| p.message.contains("cycle")).collect();
    assert_eq!(cycle.len(), 1, "{all:?}");
    for name in ["a", "b", "c"] {
        assert!(cycle[0].message.contains(&format!("`{name}`")) || cycle[0].message.contains(name));
    }
    assert!(cycle[0].message.contains("→"));
}

#[test]
fn self_dependency_is_reported() {
    let all = problems("name: a\nsteps:\n  - id: a\n    needs: [a]\n    action: http.request\n");
    assert_problem(&all, "steps[0].needs[0]", 4, 13, "cannot need itself");
}

#[test]
fn references_to_steps_that_are_not_upstream_are_reported() {
    let text = "name: a\nsteps:\n  - id: one\n    action: http.request\n  - id: two\n    action: http.request\n    with: { url: \"{{ steps.one.output.url }}\" }\n";
    let all = problems(text);
    assert_problem(
        &all,
        "steps[1].with.url",
        7,
        18,
        "not upstream of step `two`",
    );
}

#[test]
fn transitive_upstream_references_are_allowed() {
    let text = "name: a\nsteps:\n  - id: one\n    action: http.request\n  - id: two\n    needs: [one]\n    action: http.request\n  - id: three\n    needs: [two]\n    action: http.request\n    with: { url: \"{{ steps.one.output.url }}\" }\n";
    validate(text, &catalog()).unwrap_or_else(|p| panic!("{p}"));
}

#[test]
fn unknown_actions_and_connectors_get_suggestions() {
    let text = "name: a\nsteps:\n  - id: one\n    action: slack.post_mesage\n    connection: s\n  - id: two\n    action: slak.post_message\n    connection: s\n  - id: three\n    action: nodot\n";
    let all = problems(text);
    assert_problem(
        &all,
        "steps[0].action",
        4,
        13,
        "did you mean `slack.post_message`?",
    );
    assert_problem(&all, "steps[1].action", 7, 13, "unknown connector `slak`");
    assert_problem(&all, "steps[2].action", 10, 13, "`connector.action`");
}

#[test]
fn actions_that_need_a_connection_say_so() {
    let all = problems("name: a\nsteps:\n  - id: one\n    action: slack.post_message\n");
    assert_problem(&all, "steps[0].action", 4, 13, "needs a `connection`");
}

#[test]
fn expression_syntax_errors_are_located() {
    let all = problems(
        "name: a\nsteps:\n  - id: one\n    action: http.request\n    with: { url: \"{{ trigger.body.url \" }\n",
    );
    assert_problem(&all, "steps[0].with.url", 5, 18, "expression error");
}

#[test]
fn unknown_expression_roots_and_misplaced_item_are_reported() {
    let text = "name: a\nsteps:\n  - id: one\n    action: http.request\n    with: { a: \"{{ trigerr.body }}\", b: \"{{ item.x }}\" }\n";
    let all = problems(text);
    assert_problem(&all, "steps[0].with.a", 5, 16, "did you mean `trigger`?");
    assert_problem(&all, "steps[0].with.b", 5, 41, "`item` is only defined");
}

#[test]
fn bad_durations_cron_and_timezones_are_reported() {
    let text = "name: a\ntriggers:\n  - schedule: { cron: \"61 * * * *\", timezone: Mars/Olympus }\n  - schedule: { cron: \"* * *\" }\nsteps:\n  - id: one\n    action: http.request\n    timeout: 30\n";
    let all = problems(text);
    assert_problem(
        &all,
        "triggers[0].schedule.cron",
        3,
        23,
        "cron `61 * * * *` is not valid",
    );
    assert_problem(
        &all,
        "triggers[0].schedule.timezone",
        3,
        47,
        "not an IANA time zone",
    );
    assert_problem(&all, "triggers[1].schedule.cron", 4, 23, "has 3 fields");
    assert_problem(&all, "steps[0].timeout", 8, 14, "has no unit");
}

#[test]
fn unknown_keys_are_reported_in_every_step_at_once() {
    let text = "name: a\nsteps:\n  - id: one\n    action: http.request\n    nedds: [x]\n  - id: two\n    action: http.request\n    retry: { max_attempts: 3, maximum: 1m }\n";
    let all = problems(text);
    assert_problem(&all, "steps[0].nedds", 5, 5, "unknown field `nedds`");
    assert_problem(
        &all,
        "steps[1].retry.maximum",
        8,
        40,
        "unknown field `maximum`",
    );
}

#[test]
fn unknown_trigger_kinds_are_reported() {
    let all = problems(
        "name: a\ntriggers:\n  - webhok: { id: x }\nsteps:\n  - id: one\n    action: http.request\n",
    );
    assert!(
        all.iter()
            .any(|p| p.path.starts_with("triggers[0]") && p.message.contains("webhok")),
        "{all:?}"
    );
}

#[test]
fn webhooks_must_choose_a_signature_scheme() {
    let all = problems(
        "name: a\ntriggers:\n  - webhook: { id: x }\n  - webhook: { id: y, signature: { scheme: github } }\nsteps:\n  - id: one\n    action: http.request\n",
    );
    assert_problem(&all, "triggers[0].webhook", 3, 5, "scheme: none");
    assert_problem(
        &all,
        "triggers[1].webhook.signature",
        4,
        23,
        "needs `secret`",
    );
}

#[test]
fn webhook_limits_and_tolerances_are_checked() {
    let all = problems(
        "name: a\ntriggers:\n  - webhook: { id: x, signature: { scheme: github, secret: s, tolerance: 1m } }\n  - webhook: { id: y, signature: { scheme: none }, max_body_bytes: 999999999, rate_limit: { requests: 0, per: 1s } }\n  - webhook: { id: z, signature: { scheme: stripe, secret: s, tolerance: 10m } }\nsteps:\n  - id: one\n    action: http.request\n",
    );
    assert_problem(
        &all,
        "triggers[0].webhook.signature",
        3,
        23,
        "`tolerance` only applies to timestamped schemes",
    );
    assert_problem(
        &all,
        "triggers[1].webhook.max_body_bytes",
        4,
        68,
        "1 to 16777216",
    );
    assert_problem(
        &all,
        "triggers[1].webhook.rate_limit",
        4,
        79,
        "greater than zero",
    );
    assert!(
        !all.iter().any(|p| p.path.starts_with("triggers[2]")),
        "a tolerance on a timestamped scheme is fine: {all:?}"
    );
}

#[test]
fn step_and_document_limits_are_enforced() {
    let mut text = String::from("name: big\nsteps:\n");
    for i in 0..=MAX_STEPS {
        text.push_str(&format!("  - {{ id: s{i}, action: http.request }}\n"));
    }
    let all = problems(&text);
    assert_problem(&all, "steps", 2, 1, "more than the limit of 1000");

    let huge = format!(
        "name: a\ndescription: \"{}\"\nsteps: []\n",
        "x".repeat(1024 * 1024)
    );
    assert!(problems(&huge)[0].message.contains("limit"));

    let deep = format!(
        "name: a\nsteps:\n  - id: a\n    action: http.request\n    with: {{ x: {}1{} }}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(problems(&deep)[0].message.contains("nesting"));
}

#[test]
fn malformed_yaml_is_an_error_not_a_panic() {
    for (text, line) in [
        ("name: a\nsteps:\n\t- id: x\n", 3),
        ("name: a\nname: b\nsteps: []\n", 2),
        ("name: [unclosed\nsteps: []\n", 2),
        ("steps: *nowhere\n", 1),
    ] {
        let all = problems(text);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].pos.line, line, "{text:?}: {all:?}");
    }
}

#[test]
fn alias_bombs_are_bounded() {
    let mut text = String::from("name: a\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..12 {
        let p = format!("*x{}", i - 1);
        text.push_str(&format!(
            "x{i}: &x{i} [{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}]\n"
        ));
    }
    text.push_str("steps: []\n");
    assert!(problems(&text)[0].message.contains("nodes"));
}

#[test]
fn every_problem_is_reported_in_source_order() {
    let text = "name: Bad_Name\nsteps:\n  - id: Bad-Id\n    action: http.request\n  - id: ok\n    needs: [missing]\n    emit: { event: \"Not Valid\" }\n    with: { a: 1 }\n";
    let all = problems(text);
    assert!(all.len() >= 4, "{all:?}");
    let mut sorted = all.clone();
    sorted.sort_by_key(|p| p.pos);
    assert_eq!(all, sorted);
    assert_problem(&all, "name", 1, 7, "workflow name `Bad_Name`");
    assert_problem(&all, "steps[0].id", 3, 9, "step id `Bad-Id`");
}

#[test]
fn problems_print_as_line_col_path_message() {
    let all = problems("name: a\nsteps:\n  - id: a\n    needs: [b]\n    action: http.request\n");
    assert_eq!(
        all[0].to_string(),
        "4:13: steps[0].needs[0]: refers to unknown step `b`"
    );
}

/// Builds a definition whose step `i` needs the steps listed in `needs[i]`.
fn dag_text(needs: &[Vec<usize>]) -> String {
    let mut text = String::from("name: random\nsteps:\n");
    for (i, deps) in needs.iter().enumerate() {
        let list: Vec<String> = deps.iter().map(|d| format!("s{d}")).collect();
        text.push_str(&format!(
            "  - id: s{i}\n    action: http.request\n    needs: [{}]\n",
            list.join(", ")
        ));
    }
    text
}

fn arb_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (2usize..40).prop_flat_map(|n| {
        // Step i may only need steps before it, which makes the graph acyclic by construction.
        (0..n)
            .map(|i| proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(4)))
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_dags_without_cycles_validate(needs in arb_dag()) {
        let text = dag_text(&needs);
        prop_assert!(validate(&text, &catalog()).is_ok(), "{}", text);
    }

    #[test]
    fn adding_a_back_edge_reports_the_cycle(needs in arb_dag(), pick in any::<proptest::sample::Index>()) {
        // Find a path a → … → b and add b → a: choose any step with a dependency.
        let with_deps: Vec<usize> = (0..needs.len()).filter(|i| !needs[*i].is_empty()).collect();
        prop_assume!(!with_deps.is_empty());
        let from = with_deps[pick.index(with_deps.len())];
        let to = needs[from][0];
        let mut needs = needs;
        needs[to].push(from);
        let text = dag_text(&needs);
        let err = validate(&text, &catalog()).expect_err("a cycle must be rejected");
        let cycle = err.0.iter().find(|p| p.message.contains("cycle"));
        prop_assert!(cycle.is_some(), "{}", err);
        let message = &cycle.unwrap().message;
        let from_id = format!("s{from}");
        let to_id = format!("s{to}");
        prop_assert!(message.contains(&from_id) && message.contains(&to_id), "{}", message);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = validate(&text, &catalog());
    }
}
