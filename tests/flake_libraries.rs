//! Runbook libraries from flake inputs: `import "flake:INPUT/MODULE"` reads the module from the
//! deploying flake's input, so `flake.lock` pins which version runs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, NIX_FLAGS};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn lock(flake: &Path, update: bool) {
    let mut cmd = Command::new("nix");
    cmd.args(NIX_FLAGS).args(["flake", "lock"]);
    if update {
        cmd.args(["--update-input", "ops"]);
    }
    let out = cmd
        .arg(format!("path:{}", flake.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix flake lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes, under `dir`, a library flake `lib/` holding `rollout.rhai` (its text `rollout`) and
/// a deploying flake `deploy/` (one unreachable host) with `lib/` as its input `ops` and the
/// runbook `deploy/uses-lib.rhai` (its text `runbook`), and locks the deploying flake.
fn deploying_flake_with_a_library(dir: &Path, rollout: &str, runbook: &str) {
    write(&dir.join("lib/flake.nix"), "{ outputs = { self }: { }; }\n");
    write(&dir.join("lib/rollout.rhai"), rollout);
    write(
        &dir.join("deploy/flake.nix"),
        &format!(
            r#"{{
  inputs.ops.url = "path:{lib}";
  outputs = {{ self, ops }}: {{
    nixdeploy.hosts.web-1 = {{
      targetHost = "127.0.0.1"; targetPort = 1;
      toplevel = derivation {{ name = "sys"; system = "x86_64-linux"; builder = "/bin/sh"; }};
    }};
  }};
}}
"#,
            lib = dir.join("lib").display()
        ),
    );
    write(&dir.join("deploy/uses-lib.rhai"), runbook);
    lock(&dir.join("deploy"), false);
}

/// `nixdeploy run deploy/uses-lib.rhai --flake deploy/` with no binary cache, not yet run.
fn run(dir: &Path) -> Run {
    Run::new(&["run"], &dir.join("state"))
        .args(&[dir.join("deploy/uses-lib.rhai")])
        .args(&[
            "--flake".to_string(),
            format!("path:{}", dir.join("deploy").display()),
        ])
        .env("NIX_CONFIG", "substituters =")
}

#[test]
fn a_library_from_a_flake_input_runs_the_locked_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deploying_flake_with_a_library(
        dir,
        "fn version() { \"one\" }\n",
        "import \"flake:ops/rollout\" as lib;\nprint(`library version ${lib::version()}`);\n",
    );
    assert!(run(dir).success().stdout.contains("library version one"));

    write(&dir.join("lib/rollout.rhai"), "fn version() { \"two\" }\n");
    lock(&dir.join("deploy"), true);
    assert!(run(dir).success().stdout.contains("library version two"));
}

#[test]
fn an_unknown_flake_input_is_an_error_naming_the_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deploying_flake_with_a_library(
        dir,
        "fn version() { \"one\" }\n",
        "import \"flake:opz/rollout\" as lib;\n",
    );
    let out = run(dir).output();
    out.assert_code(3);
    assert!(
        out.stderr.contains("no input `opz`") && out.stderr.contains("ops"),
        "{out}"
    );
    assert!(out.stderr.contains("uses-lib.rhai:1:8"), "{out}");
}
