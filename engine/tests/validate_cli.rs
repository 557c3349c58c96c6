//! `switchyard validate` and `switchyard schema`, run as a real process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run switchyard")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &str, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo_root().join(dir))
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            format!(
                "{dir}/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_validates() {
    let mut examples = files("examples", "yaml");
    assert!(
        examples.len() >= 3,
        "at least three YAML examples: {examples:?}"
    );
    examples.extend(files("examples", "json"));
    let args: Vec<&str> = std::iter::once("validate")
        .chain(examples.iter().map(String::as_str))
        .collect();
    let out = switchyard(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for example in &examples {
        assert!(stdout.contains(&format!("{example}: ok")), "{stdout}");
    }
}

/// Each broken fixture prints exactly the problems in its `.expected` file and exits 1.
/// After a deliberate change of wording, `SWITCHYARD_BLESS=1` rewrites the expectations.
#[test]
fn every_broken_fixture_reports_its_problems_at_the_right_place() {
    let fixtures = files("examples/invalid", "yaml");
    assert!(fixtures.len() >= 10, "{fixtures:?}");
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let out = switchyard(&["validate", fixture]);
        assert_eq!(out.status.code(), Some(1), "{fixture} must be invalid");
        let actual: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix(&format!("{fixture}:")).unwrap_or(l)))
            .collect();
        let expected_path = repo_root().join(fixture.replace(".yaml", ".expected"));
        if std::env::var_os("SWITCHYARD_BLESS").is_some() {
            std::fs::write(&expected_path, &actual).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{fixture}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn problems_are_printed_as_file_line_col_path_message() {
    let out = switchyard(&["validate", "examples/invalid/unknown-need.yaml"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "examples/invalid/unknown-need.yaml:7:13: steps[1].needs[0]: refers to unknown step `fetc`; did you mean `fetch`?\n"
    );
}

#[test]
fn unreadable_files_and_bad_arguments_exit_2() {
    let out = switchyard(&["validate", "examples/does-not-exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yaml: cannot read"));
    assert_eq!(
        switchyard(&["validate"]).status.code(),
        Some(2),
        "no files is a usage error"
    );
    assert_eq!(switchyard(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn one_invalid_file_among_valid_ones_fails_the_run() {
    let out = switchyard(&[
        "validate",
        "examples/lead-intake.yaml",
        "examples/invalid/cycle.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("examples/lead-intake.yaml: ok"));
    assert!(stdout.contains("steps form a cycle"));
}

#[test]
fn huge_and_binary_input_is_rejected_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        format!("name: a\ndescription: {}\nsteps: []\n", "x".repeat(2 << 20)),
    )
    .expect("write");
    let out = switchyard(&["validate", huge.to_str().expect("utf8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("limit"));

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).expect("write");
    let out = switchyard(&["validate", binary.to_str().expect("utf8 path")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "not UTF-8 is unreadable, not a crash"
    );
}

#[test]
fn schema_verb_prints_the_checked_in_schema() {
    let out = switchyard(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let checked_in = std::fs::read_to_string(repo_root().join("schemas/json/workflow.schema.json"))
        .expect("schema file");
    assert_eq!(String::from_utf8_lossy(&out.stdout), checked_in);
}
