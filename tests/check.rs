//! `nixdeploy check`: broken runbooks are reported with locations and exit 3; good ones pass.

use std::fs;
use std::path::Path;

mod common;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn check(dir: &Path, args: &[&str]) -> common::Outcome {
    common::nixdeploy(&["check"])
        .args(args)
        .current_dir(dir)
        .output()
}

#[test]
fn syntax_error_is_reported_with_its_location() {
    let d = tempfile::TempDir::new().unwrap();
    write(d.path(), "bad.rhai", "let x = 1;\nlet y = ;\n");
    let out = check(d.path(), &["bad.rhai"]);
    out.assert_code(3).assert_stderr_contains("bad.rhai:2:9");
}

#[test]
fn unknown_function_is_reported_with_its_call_site() {
    let d = tempfile::TempDir::new().unwrap();
    write(
        d.path(),
        "typo.rhai",
        "fn later() { frobnicate(1) }\nlet h = hosts();\nexce(h, \"true\");\n",
    );
    let out = check(d.path(), &["typo.rhai"]);
    out.assert_code(3)
        .assert_stderr_contains("unknown function `exce`")
        .assert_stderr_contains("typo.rhai:3:1")
        .assert_stderr_contains("unknown function `frobnicate`")
        .assert_stderr_contains("typo.rhai:1:14");
}

#[test]
fn unresolvable_import_is_reported() {
    let d = tempfile::TempDir::new().unwrap();
    write(d.path(), "miss.rhai", "import \"nowhere\" as n;\n");
    check(d.path(), &["miss.rhai"])
        .assert_code(3)
        .assert_stderr_contains("cannot find module `nowhere`")
        .assert_stderr_contains("miss.rhai:1:8");
}

#[test]
fn error_inside_a_library_points_into_the_library() {
    let d = tempfile::TempDir::new().unwrap();
    write(d.path(), "lib/util.rhai", "fn ok() { 1 }\nfn broken( { }\n");
    write(
        d.path(),
        "main.rhai",
        "import \"util\" as util;\nutil::ok();\n",
    );
    check(d.path(), &["main.rhai", "--lib", "lib"])
        .assert_code(3)
        .assert_stderr_contains("lib/util.rhai:2:");
}

#[test]
fn import_cycle_is_reported() {
    let d = tempfile::TempDir::new().unwrap();
    write(d.path(), "a.rhai", "import \"b\" as b;\n");
    write(d.path(), "b.rhai", "import \"a\" as a;\n");
    write(d.path(), "main.rhai", "import \"a\" as a;\n");
    check(d.path(), &["main.rhai"])
        .assert_code(3)
        .assert_stderr_contains("import cycle: a.rhai → b.rhai → a.rhai");
}

#[test]
fn library_found_in_two_places_reports_which_won() {
    let d = tempfile::TempDir::new().unwrap();
    write(d.path(), "lib/rollout.rhai", "fn staged(h, o) { h }\n");
    write(
        d.path(),
        "main.rhai",
        "import \"rollout\" as rollout;\nrollout::staged(hosts(), #{});\n",
    );
    check(d.path(), &["main.rhai", "--lib", "lib"])
        .assert_success()
        .assert_stdout_contains("`rollout` → lib/rollout.rhai (shadows stdlib/rollout.rhai)")
        .assert_stdout_contains("main.rhai: ok");
}

#[test]
fn every_example_runbook_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut runbooks: Vec<String> = fs::read_dir(root.join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| p.display().to_string())
        .collect();
    runbooks.sort();
    let mut args = vec!["check".to_string()];
    args.extend(runbooks);
    common::nixdeploy(&args).current_dir(root).success();
}
