use proptest::prelude::*;
use serde_json::json;

use super::*;

fn scope() -> Scope {
    Scope::new()
        .with_trigger(json!({
            "body": {
                "email": "Ada Lovelace+1@example.com",
                "items": [{ "sku": "A-1", "qty": 2 }, { "sku": "B-2", "qty": 5 }],
                "name": "  Ada  ",
                "draft": false,
                "count": "42",
                "price": "9.5",
                "nested": { "note": "{{ steps.enrich.output.secret }}" },
            },
        }))
        .with_event(json!({ "type": "order.created" }))
        .with_step_output("enrich", json!({ "status": 200, "tags": ["a", "b"] }))
        .with_inputs(json!({ "region": "eu" }))
        .with_run(json!({ "id": "run_1" }))
}

fn render(source: &str) -> Result<Value, ExprError> {
    compile(source)?.render(&scope())
}

fn rendered(source: &str) -> Value {
    render(source).unwrap_or_else(|e| panic!("{source:?} failed: {e}"))
}

fn render_err(source: &str) -> ExprError {
    match render(source) {
        Ok(v) => panic!("{source:?} rendered {v} but should have failed"),
        Err(e) => e,
    }
}

fn condition(source: &str) -> Result<bool, ExprError> {
    compile(source)?.evaluate_condition(&scope())
}

/// Runs `f` on a thread with the stack size async runtimes give their workers, so a test fails
/// (by aborting) if the engine would overflow such a stack.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .expect("the thread does not panic")
}

// --- the three kinds of string ---------------------------------------------------------------

#[test]
fn string_without_template_syntax_is_a_literal() {
    for s in [
        "plain",
        "",
        "}} and {# not a comment",
        "json {\"a\": {\"b\": 1}}",
        "a { { b",
    ] {
        let template = compile(s).expect("literal compiles");
        assert!(template.is_literal(), "{s:?}");
        assert!(!contains_expression(s));
        assert_eq!(template.render(&scope()).expect("renders"), json!(s));
        assert_eq!(template.references(), &References::default());
    }
}

#[test]
fn literal_is_never_parsed() {
    // Not valid template syntax at all, yet fine: it contains no `{{` or `{%`.
    let template = compile("{# unterminated comment and a stray }}").expect("literal compiles");
    assert!(template.is_literal());
}

#[test]
fn exact_expression_keeps_json_type() {
    assert_eq!(rendered("{{ steps.enrich.output.status }}"), json!(200));
    assert_eq!(rendered("{{ 1.5 }}"), json!(1.5));
    assert_eq!(rendered("{{ trigger.body.draft }}"), json!(false));
    assert_eq!(rendered("{{ none }}"), Value::Null);
    assert_eq!(
        rendered("{{ trigger.body.email }}"),
        json!("Ada Lovelace+1@example.com")
    );
    assert_eq!(
        rendered("{{ steps.enrich.output.tags }}"),
        json!(["a", "b"])
    );
    assert_eq!(
        rendered("{{ trigger.body.items[0] }}"),
        json!({ "sku": "A-1", "qty": 2 })
    );
    assert_eq!(
        rendered("{{ {'b': 1, 'a': [true, none]} }}"),
        json!({ "b": 1, "a": [true, null] })
    );
    assert_eq!(rendered("{{ range(3) }}"), json!([0, 1, 2]));
}

#[test]
fn object_keys_keep_their_order() {
    let scope = Scope::new().with_trigger(json!({ "z": 1, "a": 2, "m": 3 }));
    let value = compile("{{ trigger }}")
        .and_then(|t| t.render(&scope))
        .expect("renders");
    let keys: Vec<_> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn surrounding_whitespace_is_allowed_around_a_single_expression() {
    let template = compile("  {{ steps.enrich.output.status }}\n").expect("compiles");
    assert!(template.is_single_expression());
    assert_eq!(template.render(&scope()).expect("renders"), json!(200));
}

#[test]
fn whitespace_control_markers_keep_a_single_expression() {
    assert_eq!(rendered("{{- steps.enrich.output.status -}}"), json!(200));
    assert_eq!(rendered("{{+ 1 }}"), json!(1));
    // With a space the minus is negation, not whitespace control.
    assert_eq!(rendered("{{ -1 }}"), json!(-1));
}

#[test]
fn single_expression_may_contain_closing_braces() {
    assert_eq!(
        rendered("{{ {'a': {'b': 1}} }}"),
        json!({ "a": { "b": 1 } })
    );
    assert_eq!(rendered("{{ '}}' }}"), json!("}}"));
}

#[test]
fn two_expressions_render_to_a_string() {
    let template = compile("{{ 1 }}{{ 2 }}").expect("compiles");
    assert!(!template.is_single_expression());
    assert_eq!(template.render(&scope()).expect("renders"), json!("12"));
}

#[test]
fn text_with_an_expression_renders_to_a_string() {
    assert_eq!(
        rendered("status {{ steps.enrich.output.status }}"),
        json!("status 200")
    );
    assert_eq!(rendered("{% if true %}yes{% endif %}"), json!("yes"));
}

#[test]
fn text_writes_non_string_values_as_json() {
    assert_eq!(
        rendered(
            "{{ trigger.body.draft }} {{ none }} {{ steps.enrich.output.tags }} {{ {'a': 1} }} {{ 2.5 }}"
        ),
        json!("false null [\"a\",\"b\"] {\"a\":1} 2.5")
    );
}

#[test]
fn trailing_newline_is_kept() {
    assert_eq!(rendered("line {{ 1 }}\n"), json!("line 1\n"));
}

#[test]
fn if_without_else_in_a_single_expression_is_null() {
    assert_eq!(rendered("{{ 1 if false }}"), Value::Null);
    assert_eq!(rendered("a{{ 1 if false }}b"), json!("ab"));
}

#[test]
fn payload_with_braces_is_not_re_rendered() {
    let note = "{{ steps.enrich.output.secret }}";
    assert_eq!(rendered("{{ trigger.body.nested.note }}"), json!(note));
    assert_eq!(
        rendered("note: {{ trigger.body.nested.note }}"),
        json!(format!("note: {note}"))
    );
    assert_eq!(
        rendered("{{ trigger.body.nested }}"),
        json!({ "note": note })
    );
    let tree = json!({ "a": "{{ trigger.body.nested }}", "b": ["{{ trigger.body.nested.note }}"] });
    assert_eq!(
        render_value(&tree, &scope()).expect("renders"),
        json!({ "a": { "note": note }, "b": [note] })
    );
}

// --- scope ------------------------------------------------------------------------------------

#[test]
fn every_root_is_readable() {
    let scope = scope().with_item(json!({ "sku": "A-1" }));
    let template = compile(
        "{{ trigger.body.count }} {{ event.type }} {{ steps.enrich.output.status }} {{ item.sku }} {{ inputs.region }} {{ run.id }}",
    )
    .expect("compiles");
    assert_eq!(
        template.render(&scope).expect("renders"),
        json!("42 order.created 200 A-1 eu run_1")
    );
}

#[test]
fn step_can_be_given_as_a_whole_object() {
    let scope = Scope::new().with_step("enrich", json!({ "output": 1, "status": "succeeded" }));
    let template = compile("{{ steps.enrich.status }}").expect("compiles");
    assert_eq!(
        template.render(&scope).expect("renders"),
        json!("succeeded")
    );
}

#[test]
fn root_not_set_in_the_scope_is_undefined() {
    let err = render_err("{{ item.sku }}");
    assert_eq!(err.kind(), ExprErrorKind::UndefinedVariable);
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "item"),
        "{err:?}"
    );
}

#[test]
fn unknown_root_is_undefined_and_named() {
    let err = render_err("hello {{ tirgger.body }}");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, at: Some(at) } if name == "tirgger" && at.column == 10),
        "{err:?}"
    );
}

#[test]
fn undefined_attribute_error_names_the_path() {
    let err = render_err("{{ trigger.body.emial | lower }}");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "trigger.body.emial"),
        "{err:?}"
    );
}

#[test]
fn undefined_single_expression_is_an_error_naming_it() {
    let err = render_err("{{ trigger.body.emial }}");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "trigger.body.emial"),
        "{err:?}"
    );
}

#[test]
fn undefined_inside_a_built_value_is_an_error() {
    let err = render_err("{{ [trigger.body.emial] }}");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "trigger.body.emial"),
        "{err:?}"
    );
}

#[test]
fn missing_step_is_named() {
    let err = render_err("{{ steps.charge.output.id }}");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "steps.charge"),
        "{err:?}"
    );
}

#[test]
fn defined_test_and_default_filter_accept_missing_values() {
    assert_eq!(
        rendered("{{ trigger.body.phone is defined }}"),
        json!(false)
    );
    assert_eq!(rendered("{{ item is defined }}"), json!(false));
    assert_eq!(
        rendered("{{ trigger.body.phone | default('none') }}"),
        json!("none")
    );
}

// --- filters ----------------------------------------------------------------------------------

#[test]
fn filter_urlencode_works() {
    assert_eq!(
        rendered("?email={{ trigger.body.email | urlencode }}"),
        json!("?email=Ada%20Lovelace%2B1%40example.com")
    );
}

#[test]
fn filter_tojson_works() {
    assert_eq!(
        rendered("{{ trigger.body.items[0] | tojson }}"),
        json!(r#"{"sku": "A-1", "qty": 2}"#)
    );
}

#[test]
fn filter_default_works() {
    assert_eq!(
        rendered("{{ trigger.body.missing | default(3) }}"),
        json!(3)
    );
}

#[test]
fn filter_lower_works() {
    assert_eq!(rendered("{{ 'AbC' | lower }}"), json!("abc"));
}

#[test]
fn filter_upper_works() {
    assert_eq!(rendered("{{ inputs.region | upper }}"), json!("EU"));
}

#[test]
fn filter_length_works() {
    assert_eq!(rendered("{{ trigger.body.items | length }}"), json!(2));
}

#[test]
fn filter_join_works() {
    assert_eq!(
        rendered("{{ steps.enrich.output.tags | join(', ') }}"),
        json!("a, b")
    );
}

#[test]
fn filter_int_works() {
    assert_eq!(rendered("{{ trigger.body.count | int + 1 }}"), json!(43));
}

#[test]
fn filter_float_works() {
    assert_eq!(
        rendered("{{ trigger.body.price | float * 2 }}"),
        json!(19.0)
    );
}

#[test]
fn filter_trim_works() {
    assert_eq!(rendered("[{{ trigger.body.name | trim }}]"), json!("[Ada]"));
}

// --- compile errors ---------------------------------------------------------------------------

#[test]
fn syntax_error_reports_column_inside_the_string() {
    let err = compile("Hello {{ name }").expect_err("unbalanced");
    assert!(
        matches!(
            err,
            ExprError::Syntax {
                offset: 14,
                line: 1,
                column: 15,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn syntax_error_reports_line_inside_the_string() {
    let err = compile("first line\nnow {{ 1 +* 2 }}").expect_err("bad operator");
    assert!(
        matches!(
            err,
            ExprError::Syntax {
                line: 2,
                column: 11,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.location().map(|l| l.offset), Some(21));
}

#[test]
fn column_counts_characters_not_bytes() {
    let err = compile("héllo {{ 1 +* 2 }}").expect_err("bad operator");
    assert!(
        matches!(
            err,
            ExprError::Syntax {
                column: 13,
                offset: 13,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unclosed_expression_is_a_syntax_error() {
    let err = compile("{{ trigger.body").expect_err("unclosed");
    assert_eq!(err.kind(), ExprErrorKind::Syntax);
}

#[test]
fn unclosed_block_is_a_syntax_error() {
    let err = compile("{% if true %}yes").expect_err("no endif");
    assert_eq!(err.kind(), ExprErrorKind::Syntax);
}

#[test]
fn empty_expression_is_a_syntax_error() {
    assert_eq!(
        compile("{{ }}").expect_err("empty").kind(),
        ExprErrorKind::Syntax
    );
}

#[test]
fn unknown_filter_is_reported_at_compile_time_with_its_location() {
    let err = compile("{{ trigger.body.email | urlencod }}").expect_err("unknown filter");
    assert!(
        matches!(&err, ExprError::UnknownFilter { name, at: Some(at) } if name == "urlencod" && at.column == 25),
        "{err:?}"
    );
}

#[test]
fn unknown_filter_in_an_untaken_branch_is_still_reported() {
    let err = compile("{% if false %}{{ 1 | nope }}{% endif %}").expect_err("unknown filter");
    assert!(
        matches!(&err, ExprError::UnknownFilter { name, .. } if name == "nope"),
        "{err:?}"
    );
}

#[test]
fn unknown_filter_in_a_filter_block_is_reported() {
    let err = compile("{% filter shout %}hi{% endfilter %}").expect_err("unknown filter");
    assert!(
        matches!(&err, ExprError::UnknownFilter { name, .. } if name == "shout"),
        "{err:?}"
    );
}

#[test]
fn unknown_test_is_reported_at_compile_time() {
    let err = compile("{{ 1 is not prime }}").expect_err("unknown test");
    assert!(
        matches!(&err, ExprError::UnknownTest { name, .. } if name == "prime"),
        "{err:?}"
    );
}

#[test]
fn filter_like_text_in_strings_comments_and_raw_blocks_is_not_checked() {
    for s in [
        "{{ 'a | nope' }}",
        "{{ \"is nope\" ~ 'x' }}",
        "{# x | nope #}{{ 1 }}",
        "{% raw %}{{ x | nope }}{% endraw %}{{ 1 }}",
        "a | nope {{ 1 }} b is nope",
        "{{ trigger.is }}",
    ] {
        compile(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
}

#[test]
fn source_longer_than_the_limit_is_refused() {
    let long = format!(
        "{{{{ '{}' }}}}",
        "x".repeat(Limits::DEFAULT.max_source_bytes)
    );
    let err = compile(&long).expect_err("too long");
    assert!(
        matches!(err, ExprError::SourceTooLong { max: 16384, .. }),
        "{err:?}"
    );
    // Even a literal: the limit is on the source, whatever it holds.
    let literal = "x".repeat(Limits::DEFAULT.max_source_bytes + 1);
    assert_eq!(
        compile(&literal).expect_err("too long").kind(),
        ExprErrorKind::SourceTooLong
    );
}

#[test]
fn macros_imports_and_includes_do_not_exist() {
    for s in [
        "{% macro f() %}x{% endmacro %}",
        "{% include 'secrets.txt' %}",
        "{% import 'x' as y %}",
        "{% extends 'base' %}",
    ] {
        assert_eq!(
            compile(s).expect_err(s).kind(),
            ExprErrorKind::Syntax,
            "{s:?}"
        );
    }
}

#[test]
fn namespace_and_debug_do_not_exist() {
    for s in ["{{ namespace(x=1) }}", "{{ debug() }}"] {
        assert_eq!(
            render_err(s).kind(),
            ExprErrorKind::UndefinedVariable,
            "{s:?}"
        );
    }
}

// --- runtime errors and limits ----------------------------------------------------------------

#[test]
fn fuel_exhaustion_is_an_error_not_a_hang() {
    let started = std::time::Instant::now();
    let err = render_err(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    );
    assert!(
        matches!(err, ExprError::FuelExhausted { fuel: 100_000 }),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn huge_string_repetition_is_refused_before_allocating() {
    let err = render_err("{{ 'x' * 100000000 }}");
    assert_eq!(err.kind(), ExprErrorKind::FuelExhausted);
}

#[test]
fn large_text_output_is_an_error() {
    let err = render_err("big: {{ 'x' * 2000000 }}");
    assert!(
        matches!(err, ExprError::OutputTooLarge { max: 1_048_576 }),
        "{err:?}"
    );
}

#[test]
fn large_single_expression_value_is_an_error() {
    let err = render_err("{{ 'x' * 2000000 }}");
    assert_eq!(err.kind(), ExprErrorKind::OutputTooLarge);
}

#[test]
fn repeated_joins_are_bounded() {
    let err = render_err(
        "{% for i in range(1000) %}{{ range(1000) | join(',') }}{{ (range(1000) | join(',')) * 50 }}{% endfor %}",
    );
    assert!(err.kind().is_limit(), "{err:?}");
}

#[test]
fn custom_limits_apply() {
    let low_fuel = Limits {
        fuel: 50,
        ..Limits::DEFAULT
    };
    let loop_ = compile("{% for i in range(100) %}{{ i }}{% endfor %}").expect("compiles");
    assert_eq!(
        loop_
            .render_with(&scope(), &low_fuel)
            .expect_err("fuel")
            .kind(),
        ExprErrorKind::FuelExhausted
    );
    let tight = Limits {
        fuel: 50,
        max_output_bytes: 8,
        max_source_bytes: 64,
    };
    let long = compile_with("{{ 'abcdefghij' }}", &tight).expect("compiles");
    assert_eq!(
        long.render_with(&scope(), &tight)
            .expect_err("output")
            .kind(),
        ExprErrorKind::OutputTooLarge
    );
    assert_eq!(
        compile_with(&"x".repeat(65), &tight)
            .expect_err("source")
            .kind(),
        ExprErrorKind::SourceTooLong
    );
    assert_eq!(
        long.render(&scope()).expect("default limits"),
        json!("abcdefghij")
    );
}

#[test]
fn limits_deserialize_with_defaults_for_missing_fields() {
    let limits: Limits = serde_json::from_value(json!({ "fuel": 5 })).expect("valid limits");
    assert_eq!(
        limits,
        Limits {
            fuel: 5,
            ..Limits::DEFAULT
        }
    );
    assert!(serde_json::from_value::<Limits>(json!({ "fule": 5 })).is_err());
}

#[test]
fn recursion_is_an_error_not_a_stack_overflow() {
    let err =
        on_small_stack(|| render("{% for x in [[1]] recursive %}{{ loop([[[1]]]) }}{% endfor %}"))
            .expect_err("infinite recursion");
    assert_eq!(err.kind(), ExprErrorKind::Evaluation, "{err:?}");
}

#[test]
fn deeply_nested_source_is_an_error_not_a_stack_overflow() {
    let results = on_small_stack(|| {
        [
            format!("{{{{ {}1{} }}}}", "[".repeat(5000), "]".repeat(5000)),
            format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000)),
            format!("{{{{ 1{} }}}}", " | lower".repeat(1500)),
            format!(
                "{}x{}",
                "{% if true %}".repeat(1000),
                "{% endif %}".repeat(1000)
            ),
        ]
        .map(|s| render(&s).map(|_| ()))
    });
    for result in results {
        assert!(result.is_err(), "{result:?}");
    }
}

#[test]
fn moderately_nested_blocks_render_on_a_small_stack() {
    let value = on_small_stack(|| {
        render(&format!(
            "{}x{}",
            "{% if true %}".repeat(60),
            "{% endif %}".repeat(60)
        ))
    })
    .expect("renders");
    assert_eq!(value, json!("x"));
}

#[test]
fn division_by_zero_is_an_evaluation_error() {
    let err = render_err("{{ 1 / 0 }}");
    assert_eq!(err.kind(), ExprErrorKind::Evaluation);
}

#[test]
fn type_error_is_an_evaluation_error_with_a_location() {
    let err = render_err("x {{ steps.enrich.output.tags + 1 }}");
    assert_eq!(err.kind(), ExprErrorKind::Evaluation);
    assert_eq!(err.location().map(|l| l.line), Some(1));
}

#[test]
fn functions_cannot_be_output() {
    assert_eq!(render_err("{{ range }}").kind(), ExprErrorKind::Evaluation);
}

#[test]
fn error_kinds_classify_limits() {
    assert!(ExprErrorKind::FuelExhausted.is_limit());
    assert!(ExprErrorKind::OutputTooLarge.is_limit());
    assert!(ExprErrorKind::SourceTooLong.is_limit());
    assert!(!ExprErrorKind::UndefinedVariable.is_limit());
    assert!(!ExprErrorKind::Syntax.is_limit());
}

// --- render_value -----------------------------------------------------------------------------

#[test]
fn render_value_renders_strings_and_keeps_everything_else() {
    let scope = scope().with_item(json!({ "sku": "A-1", "qty": 3 }));
    let with = json!({
        "{{ item.sku }}": "{{ item.qty }}",
        "values": ["{{ item.sku }}", "{{ item.qty }}", 7, true, null],
        "text": "qty={{ item.qty }}",
        "plain": "no expressions",
    });
    assert_eq!(
        render_value(&with, &scope).expect("renders"),
        json!({
            "{{ item.sku }}": 3,
            "values": ["A-1", 3, 7, true, null],
            "text": "qty=3",
            "plain": "no expressions",
        })
    );
}

#[test]
fn render_value_errors_name_the_json_path() {
    let with = json!({ "values": ["{{ item.sku }}", "{{ item.qty | nope }}"] });
    let err = render_value(&with, &scope().with_item(json!({ "sku": "A", "qty": 1 })))
        .expect_err("unknown filter")
        .within("with");
    assert_eq!(err.path(), Some("with.values[1]"));
    assert_eq!(err.kind(), ExprErrorKind::UnknownFilter);
    assert!(
        err.to_string()
            .starts_with("with.values[1]: unknown filter `nope`"),
        "{err}"
    );
}

#[test]
fn render_value_quotes_unusual_keys_in_paths() {
    let with = json!({ "headers": { "X Trace": "{{ nope }}" } });
    let err = render_value(&with, &scope()).expect_err("undefined");
    assert_eq!(err.path(), Some(r#"headers["X Trace"]"#));
}

#[test]
fn render_value_output_limit_covers_the_whole_tree() {
    let limits = Limits {
        max_output_bytes: 100,
        ..Limits::DEFAULT
    };
    let one = json!(["{{ 'x' * 60 }}"]);
    assert!(render_value_with(&one, &scope(), &limits).is_ok());
    let two = json!(["{{ 'x' * 60 }}", "{{ 'x' * 60 }}"]);
    let err = render_value_with(&two, &scope(), &limits).expect_err("over the limit together");
    assert_eq!(err.kind(), ExprErrorKind::OutputTooLarge);
    assert_eq!(err.path(), Some("[1]"));
}

// --- references -------------------------------------------------------------------------------

#[test]
fn references_list_roots_and_step_ids() {
    let template = compile(
        "{{ steps.enrich.output.status }} {{ steps.score.output }} {{ trigger.body.email | urlencode }}",
    )
    .expect("compiles");
    let refs = template.references();
    assert_eq!(refs.roots.iter().collect::<Vec<_>>(), ["steps", "trigger"]);
    assert_eq!(refs.steps.iter().collect::<Vec<_>>(), ["enrich", "score"]);
    assert!(!refs.dynamic_steps);
    assert!(refs.paths.contains("steps.enrich.output.status"));
}

#[test]
fn references_include_unknown_roots() {
    let template = compile("{{ trigger.a }} {{ secrets.token }}").expect("compiles");
    assert_eq!(
        template.references().roots.iter().collect::<Vec<_>>(),
        ["secrets", "trigger"]
    );
}

#[test]
fn references_exclude_loop_variables_and_built_in_functions() {
    let template = compile(
        "{% for it in trigger.body.items %}{{ it.sku }}{{ loop.index }}{% endfor %}{% set n = 1 %}{{ n }}{{ range(2) }}{{ dict(a=1) }}",
    )
    .expect("compiles");
    assert_eq!(
        template.references().roots.iter().collect::<Vec<_>>(),
        ["trigger"]
    );
}

#[test]
fn references_flag_dynamic_step_access() {
    let template = compile("{{ steps[trigger.body.which].output }}").expect("compiles");
    let refs = template.references();
    assert!(refs.dynamic_steps);
    assert!(refs.steps.is_empty());
}

#[test]
fn references_work_for_a_single_expression() {
    let template = compile("{{ steps.enrich.output.status == 200 }}").expect("compiles");
    assert!(template.is_single_expression());
    assert_eq!(
        template.references().steps.iter().collect::<Vec<_>>(),
        ["enrich"]
    );
}

// --- conditions -------------------------------------------------------------------------------

#[test]
fn condition_with_missing_flag_is_false() {
    assert_eq!(condition("{{ trigger.body.urgent }}"), Ok(false));
    assert_eq!(condition("{{ not trigger.body.urgent }}"), Ok(true));
    assert_eq!(condition("{{ trigger.body.urgent and true }}"), Ok(false));
}

#[test]
fn condition_comparing_a_missing_value_is_an_error() {
    let err = condition("{{ steps.enrich.output.stauts == 200 }}").expect_err("misspelt field");
    assert!(
        matches!(&err, ExprError::UndefinedVariable { name, .. } if name == "steps.enrich.output.stauts"),
        "{err:?}"
    );
}

#[test]
fn condition_with_unknown_root_is_an_error() {
    assert_eq!(
        condition("{{ tirgger.body.urgent }}")
            .expect_err("unknown root")
            .kind(),
        ExprErrorKind::UndefinedVariable
    );
}

#[test]
fn condition_follows_truthiness_of_values() {
    assert_eq!(
        condition("{{ steps.enrich.output.status == 200 }}"),
        Ok(true)
    );
    assert_eq!(condition("{{ trigger.body.draft }}"), Ok(false));
    assert_eq!(condition("{{ 0 }}"), Ok(false));
    assert_eq!(condition("{{ [] }}"), Ok(false));
    assert_eq!(condition("{{ {} }}"), Ok(false));
    assert_eq!(condition("{{ none }}"), Ok(false));
    assert_eq!(condition("{{ trigger.body.items }}"), Ok(true));
}

#[test]
fn condition_strings_false_zero_null_and_empty_are_false() {
    for s in [
        "false",
        " FALSE ",
        "0",
        "null",
        "",
        "{{ 'False' }}",
        "{% if false %}x{% endif %}",
    ] {
        assert_eq!(condition(s), Ok(false), "{s:?}");
    }
    for s in ["true", "yes", "{{ 'no' }}", "{{ trigger.body.count }}"] {
        assert_eq!(condition(s), Ok(true), "{s:?}");
    }
}

// --- properties -------------------------------------------------------------------------------

fn template_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{%".to_owned()),
        Just("%}".to_owned()),
        Just("{#".to_owned()),
        Just("#}".to_owned()),
        Just(" for x in ".to_owned()),
        Just(" endfor ".to_owned()),
        Just(" if ".to_owned()),
        Just(" endif ".to_owned()),
        Just("raw".to_owned()),
        Just(" | ".to_owned()),
        Just(" is ".to_owned()),
        Just("trigger.body.items".to_owned()),
        Just("steps.enrich.output".to_owned()),
        Just("item".to_owned()),
        Just("range(10)".to_owned()),
        Just("'s'".to_owned()),
        Just("\"".to_owned()),
        Just("-".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("*".to_owned()),
        Just("~".to_owned()),
        "[a-z_]{1,8}",
        "[0-9]{1,4}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn exercise(source: &str) {
    let scope = scope().with_item(json!({ "sku": "A-1" }));
    if let Ok(template) = compile(source) {
        let _ = template.references();
        let _ = template.render(&scope);
        let _ = template.evaluate_condition(&scope);
    }
    let _ = render_value(&json!({ "a": [source] }), &scope);
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(source in any::<String>()) {
        exercise(&source);
    }

    #[test]
    fn template_like_strings_never_panic(source in template_soup()) {
        exercise(&source);
    }

    #[test]
    fn strings_without_template_syntax_render_to_themselves(source in "[^{]*") {
        let template = compile(&source).expect("a literal always compiles");
        prop_assert!(template.is_literal());
        prop_assert_eq!(template.render(&Scope::new()).expect("renders"), json!(source));
    }

    #[test]
    fn rendered_strings_are_inserted_verbatim(payload in any::<String>()) {
        let scope = Scope::new().with_trigger(json!({ "text": payload }));
        let single = compile("{{ trigger.text }}").expect("compiles");
        prop_assert_eq!(single.render(&scope).expect("renders"), json!(payload));
        let text = compile("<{{ trigger.text }}>").expect("compiles");
        prop_assert_eq!(text.render(&scope).expect("renders"), json!(format!("<{payload}>")));
    }
}
