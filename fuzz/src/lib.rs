//! The bodies of the fuzz targets, as plain functions.
//!
//! Each target in `fuzz_targets/` only forwards its input here, so that the same code runs
//! under the fuzzer (nightly) and in ordinary tests (stable), and a crash input found by the
//! fuzzer can be kept as a regression test below.

#![forbid(unsafe_code)]

use std::sync::LazyLock;

use schemas::catalog::AnyAction;
use schemas::expr::{self, Scope};
use serde_json::json;

/// A small scope with every root set, so expressions that read real data get past the
/// undefined-variable checks and exercise evaluation.
static SCOPE: LazyLock<Scope> = LazyLock::new(|| {
    Scope::new()
        .with_trigger(json!({
            "body": { "email": "a@example.com", "items": [{ "sku": "A", "qty": 2 }, { "sku": "B", "qty": 0 }], "n": 3 },
            "headers": { "content-type": "application/json" },
        }))
        .with_event(json!({ "type": "order.created", "data": { "id": 7 } }))
        .with_step_output("enrich", json!({ "status": 200, "tags": ["x", "y"], "text": "{{ trigger }}" }))
        .with_item(json!({ "sku": "A", "qty": 2 }))
        .with_inputs(json!({ "region": "eu" }))
        .with_run(json!({ "id": "run_1" }))
});

/// Compiles arbitrary UTF-8 as an expression string and renders it every way the engine
/// does. Errors are fine; panics, hangs, stack overflows and runaway memory are not.
pub fn expression(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = expr::compile(source) {
        if !expr::contains_expression(source) {
            assert!(
                template.is_literal(),
                "a string without template syntax is a literal"
            );
            assert_eq!(
                template.render(&SCOPE).ok(),
                Some(json!(source)),
                "a literal renders to itself"
            );
        }
        let refs = template.references();
        assert!(refs.steps.is_empty() || refs.roots.contains("steps"));
        let _ = template.render(&SCOPE);
        let _ = template.evaluate_condition(&SCOPE);
    }
    let _ = expr::render_value(&json!({ "with": { "values": [source, 1] } }), &SCOPE);
}

/// Validates arbitrary UTF-8 as a workflow definition (YAML or JSON). Every outcome must be
/// `Ok` or a list of problems, each with a position inside the input.
pub fn definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = schemas::validate::validate(text, &AnyAction) {
        assert!(!problems.0.is_empty(), "an error always carries a problem");
        let lines = text.lines().count().max(1) + 1;
        for p in &problems.0 {
            assert!(p.pos.line >= 1 && p.pos.line <= lines, "{p} is outside the input");
            assert!(p.pos.column >= 1, "{p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs that have broken expression engines before: deep nesting, long operator chains,
    /// work and output bombs, unterminated syntax.
    #[test]
    fn known_hard_inputs_do_not_crash() {
        let deep = |open: &str, close: &str, n: usize| {
            format!("{{{{ {}1{} }}}}", open.repeat(n), close.repeat(n))
        };
        let inputs = [
            String::new(),
            "{{".to_owned(),
            "{{ trigger.body.items | map(attribute='sku') | join(',') }}".to_owned(),
            "{% for x in trigger.body.items %}{{ x.sku }}{% endfor %}".to_owned(),
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}".to_owned(),
            "{{ 'x' * 100000000 }}".to_owned(),
            "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}".to_owned(),
            "{% raw %}{{ x | nope }}".to_owned(),
            deep("[", "]", 3000),
            deep("(", ")", 3000),
            format!("{{{{ 1{} }}}}", " | lower".repeat(1500)),
            format!("{{{{ {}1 }}}}", "not ".repeat(3000)),
            format!("{{{{ 1{} }}}}", " + 1".repeat(3000)),
            format!("{}x", "{% if true %}".repeat(1000)),
        ];
        for input in inputs {
            expression(input.as_bytes());
        }
    }

    #[test]
    fn hard_definitions_do_not_crash() {
        let inputs = [
            String::new(),
            "name: a\nsteps:\n\t- id: x\n".to_owned(),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("{}{}", "{a: ".repeat(5_000), "}".repeat(5_000)),
            "a: &a [*a]".to_owned(),
            "name: a\nsteps: [{id: a, needs: [a], action: x.y, with: {u: '{{ steps.a.output }}'}}]".to_owned(),
            "? [a, b]\n: c".to_owned(),
            "--- a\n--- b".to_owned(),
        ];
        for input in inputs {
            definition(input.as_bytes());
        }
    }

    #[test]
    fn invalid_utf8_is_ignored() {
        expression(&[0xff, 0xfe, b'{', b'{']);
    }
}
