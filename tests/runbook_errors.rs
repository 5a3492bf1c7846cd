//! Broken runbooks: each one fails with its own message at the right `file:line:col`, exits
//! non-zero and contacts no host (the inventory's hosts point at a closed loopback port, so any
//! contact would show up as a connection error instead).

use std::path::{Path, PathBuf};
use std::process::Command;

const FLAKE: &str = r#"{
  outputs = { self }: let
    mk = n: derivation { name = "nixos-system-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; };
    host = n: tags: { targetHost = "127.0.0.1"; targetPort = 1; inherit tags; toplevel = mk n; };
  in {
    nixdeploy.hosts = {
      web-1 = host "web-1" [ "web" "canary" ];
      web-2 = host "web-2" [ "web" ];
      db-1 = host "db-1" [ "db" ];
    };
  };
}"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flake.nix"), FLAKE).unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        Fixture { dir }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, runbook: &Path, extra: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
            .arg("run")
            .arg(runbook)
            .arg("--flake")
            .arg(format!("path:{}", self.dir.path().display()))
            .args(extra)
            .env("NIXDEPLOY_STATE_DIR", self.dir.path().join("state"))
            .env("NIX_CONFIG", "substituters =")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Runs `text` as `name`, expecting failure with `message` at `line:col` of `at` (default: the runbook).
fn expect_error(name: &str, text: &str, message: &str, at: &str) {
    expect_error_with(name, text, message, at, &[], &[]);
}

fn expect_error_with(
    name: &str,
    text: &str,
    message: &str,
    at: &str,
    files: &[(&str, &str)],
    extra: &[&str],
) {
    let fx = Fixture::new();
    for (f, t) in files {
        fx.file(f, t);
    }
    let runbook = fx.file(name, text);
    let (code, stderr) = fx.run(&runbook, extra);
    assert_ne!(code, 0, "{name} should fail\n{stderr}");
    assert!(
        stderr.contains(message),
        "{name}: expected `{message}` in:\n{stderr}"
    );
    assert!(
        stderr.contains(at),
        "{name}: expected location `{at}` in:\n{stderr}"
    );
    assert!(
        !stderr.contains("cannot reach"),
        "{name} contacted a host:\n{stderr}"
    );
    assert!(
        !stderr.contains("Connection refused"),
        "{name} contacted a host:\n{stderr}"
    );
}

#[test]
fn syntax_error_points_at_the_token() {
    expect_error(
        "syntax.rhai",
        "let x = 1;\nlet y = ;\n",
        "error:",
        "syntax.rhai:2:9",
    );
}

#[test]
fn syntax_error_shows_the_line_and_a_caret() {
    let fx = Fixture::new();
    let rb = fx.file("caret.rhai", "let ok = 1;\nlet broken = (;\n");
    let (code, stderr) = fx.run(&rb, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("2 | let broken = (;"), "{stderr}");
    assert!(stderr.contains("^"), "{stderr}");
}

#[test]
fn unknown_function_is_named_with_its_call_site() {
    expect_error(
        "unknown_fn.rhai",
        "let h = hosts();\nfrobnicate(h);\n",
        "frobnicate",
        "unknown_fn.rhai:2:1",
    );
}

#[test]
fn unknown_host_suggests_known_ones() {
    expect_error(
        "unknown_host.rhai",
        "let h = host(\"web-9\");\n",
        "web-9",
        "unknown_host.rhai:1:9",
    );
}

#[test]
fn selector_matching_nothing_is_an_error() {
    expect_error(
        "nothing.rhai",
        "\nlet h = hosts(\"cache-*\");\n",
        "cache-*",
        "nothing.rhai:2:9",
    );
}

#[test]
fn malformed_selector_is_an_error() {
    expect_error(
        "malformed.rhai",
        "let h = hosts(\"web-1,,db-1\");\n",
        "selector",
        "malformed.rhai:1:9",
    );
}

#[test]
fn wrong_argument_type_is_an_error() {
    expect_error(
        "wrong_type.rhai",
        "let b = build(42);\n",
        "expected a host",
        "wrong_type.rhai:1:9",
    );
}

#[test]
fn wrong_option_type_is_an_error() {
    expect_error(
        "option_type.rhai",
        "let r = activate(hosts(), #{ mode: 5 });\n",
        "option `mode` must be a string",
        "option_type.rhai:1:9",
    );
}

#[test]
fn misspelled_option_is_an_error() {
    expect_error(
        "typo.rhai",
        "activate(hosts(), #{ magic_rolback: false });\n",
        "unknown option `magic_rolback`",
        "typo.rhai:1:1",
    );
}

#[test]
fn unknown_activation_mode_is_an_error() {
    expect_error(
        "mode.rhai",
        "activate(hosts(), #{ mode: \"reboot\" });\n",
        "unknown activation mode",
        "mode.rhai:1:1",
    );
}

#[test]
fn thrown_error_is_reported_where_thrown() {
    expect_error(
        "throw.rhai",
        "let a = 1;\n\nthrow \"stop here\";\n",
        "stop here",
        "throw.rhai:3:1",
    );
}

#[test]
fn error_in_imported_module_shows_both_locations() {
    expect_error_with(
        "imports.rhai",
        "import \"lib/broken\" as b;\nb::run_it();\n",
        "broken inside",
        "imports.rhai:2:4",
        &[(
            "lib/broken.rhai",
            "fn run_it() {\n    throw \"broken inside\";\n}\n",
        )],
        &[],
    );
    // The library's own position is there too.
    let fx = Fixture::new();
    fx.file(
        "lib/broken.rhai",
        "fn run_it() {\n    throw \"broken inside\";\n}\n",
    );
    let rb = fx.file(
        "imports.rhai",
        "import \"lib/broken\" as b;\nb::run_it();\n",
    );
    let (_, stderr) = fx.run(&rb, &[]);
    assert!(stderr.contains("broken.rhai:2:5"), "{stderr}");
}

#[test]
fn unresolvable_import_is_an_error() {
    expect_error(
        "noimport.rhai",
        "\nimport \"no_such_lib\" as x;\n",
        "cannot find module `no_such_lib`",
        "noimport.rhai:2:8",
    );
}

#[test]
fn syntax_error_in_library_names_the_library_file() {
    expect_error_with(
        "badlib.rhai",
        "import \"lib/syntax\" as s;\n",
        "error",
        "syntax.rhai:2:",
        &[("lib/syntax.rhai", "fn ok() { 1 }\nfn bad( { }\n")],
        &[],
    );
}

#[test]
fn import_cycle_is_an_error() {
    expect_error_with(
        "cycle.rhai",
        "import \"lib/a\" as a;\n",
        "import cycle",
        "cycle.rhai:1:8",
        &[
            ("lib/a.rhai", "import \"b\" as b;\n"),
            ("lib/b.rhai", "import \"a\" as a;\n"),
        ],
        &[],
    );
}

#[test]
fn undefined_variable_is_a_compile_error() {
    expect_error(
        "strict.rhai",
        "let a = 1;\nprint(undefined_thing);\n",
        "undefined_thing",
        "strict.rhai:2:7",
    );
}

#[test]
fn host_outside_on_cannot_be_touched() {
    expect_error_with(
        "outside.rhai",
        "let h = host(\"db-1\");\n",
        "not selected by --on",
        "outside.rhai:1:9",
        &[],
        &["--on", "@web"],
    );
}

#[test]
fn empty_exec_command_is_an_error() {
    expect_error(
        "exec_empty.rhai",
        "exec(hosts(), \"  \");\n",
        "the command is empty",
        "exec_empty.rhai:1:1",
    );
}

#[test]
fn bad_key_permissions_are_rejected_before_any_host() {
    expect_error(
        "key_mode.rhai",
        "upload_key(hosts(), #{ name: \"k\", text: \"x\", permissions: \"999\" });\n",
        "permissions",
        "key_mode.rhai:1:1",
    );
}

#[test]
fn error_inside_a_function_shows_the_call_chain() {
    let fx = Fixture::new();
    let rb = fx.file(
        "chain.rhai",
        "fn deploy(sel) {\n    hosts(sel)\n}\n\ndeploy(\"nope-*\");\n",
    );
    let (code, stderr) = fx.run(&rb, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("chain.rhai:2:5"), "{stderr}");
    assert!(stderr.contains("chain.rhai:5:1"), "{stderr}");
}

#[test]
fn missing_runbook_file_is_an_error() {
    let fx = Fixture::new();
    let (code, stderr) = fx.run(&fx.dir.path().join("missing.rhai"), &[]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot read runbook"), "{stderr}");
}

#[test]
fn malformed_set_flag_is_an_error() {
    let fx = Fixture::new();
    let rb = fx.file("ok.rhai", "print(1);\n");
    let (code, stderr) = fx.run(&rb, &["--set", "novalue"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
}

const DECLARED: &str = "//! param batch: int = 2  hosts per wave\n//! param mode: string = \"switch\"  activation mode\nprint(`${params.batch + 1} ${params.mode}`);\n";

#[test]
fn run_help_lists_the_runbooks_declared_parameters() {
    let fx = Fixture::new();
    let rb = fx.file("declared.rhai", DECLARED);
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .arg("run")
        .arg(&rb)
        .arg("--help")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("batch") && stdout.contains("int") && stdout.contains("hosts per wave"),
        "{stdout}"
    );
    assert!(stdout.contains("(default: switch)"), "{stdout}");
}

#[test]
fn set_values_are_type_checked_before_anything_runs() {
    let fx = Fixture::new();
    let rb = fx.file("declared.rhai", DECLARED);
    let (code, stderr) = fx.run(&rb, &["--set", "batch=many"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("--set batch") && stderr.contains("not an int"),
        "{stderr}"
    );
    let (code, stderr) = fx.run(&rb, &["--set", "colour=red"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("no parameter `colour`"), "{stderr}");
}

#[test]
fn declared_parameters_arrive_typed_with_defaults() {
    let fx = Fixture::new();
    let rb = fx.file("declared.rhai", DECLARED);
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .arg("run")
        .arg(&rb)
        .arg("--flake")
        .arg(format!("path:{}", fx.dir.path().display()))
        .args(["--set", "batch=4"])
        .env("NIXDEPLOY_STATE_DIR", fx.dir.path().join("state"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 switch"), "{stdout}");
}

#[test]
fn a_missing_library_imported_late_stops_the_run_before_any_host() {
    expect_error(
        "late.rhai",
        "exec(hosts(), \"true\");\nfn later() {\n    import \"nowhere\" as n;\n    n::start()\n}\nlater();\n",
        "cannot find module `nowhere`",
        "late.rhai:3:12",
    );
}

#[test]
fn a_broken_library_two_imports_deep_stops_the_run_before_any_host() {
    expect_error_with(
        "deep.rhai",
        "exec(hosts(), \"true\");\nfn later() { import \"lib/outer\" as o; o::start() }\nlater();\n",
        "deep.rhai:2:",
        "inner.rhai:2:",
        &[
            ("lib/outer.rhai", "fn start() { import \"inner\" as i; i::start() }\n"),
            ("lib/inner.rhai", "fn start() { 1 }\nfn broken( {\n"),
        ],
        &[],
    );
}

#[test]
fn an_import_cycle_behind_a_function_stops_the_run_before_any_host() {
    expect_error_with(
        "latecycle.rhai",
        "exec(hosts(), \"true\");\nfn later() { import \"lib/a\" as a; }\nlater();\n",
        "import cycle",
        "latecycle.rhai:2:",
        &[
            ("lib/a.rhai", "fn f() { import \"b\" as b; }\n"),
            ("lib/b.rhai", "fn g() { import \"a\" as a; }\n"),
        ],
        &[],
    );
}
