//! Runbook libraries from flake inputs: `import "flake:INPUT/MODULE"` reads the module from the
//! deploying flake's input, so `flake.lock` pins which version runs.

use std::path::Path;
use std::process::Command;

const NIX: &[&str] = &[
    "--extra-experimental-features",
    "nix-command flakes",
    "--option",
    "substituters",
    "",
];

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn lock(flake: &Path, update: bool) {
    let mut cmd = Command::new("nix");
    cmd.args(NIX).args(["flake", "lock"]);
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

fn run(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .arg("run")
        .arg(dir.join("deploy/uses-lib.rhai"))
        .arg("--flake")
        .arg(format!("path:{}", dir.join("deploy").display()))
        .env("NIXDEPLOY_STATE_DIR", dir.join("state"))
        .env("NIX_CONFIG", "substituters =")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_library_from_a_flake_input_runs_the_locked_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(&dir.join("lib/flake.nix"), "{ outputs = { self }: { }; }\n");
    write(&dir.join("lib/rollout.rhai"), "fn version() { \"one\" }\n");
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
    write(
        &dir.join("deploy/uses-lib.rhai"),
        "import \"flake:ops/rollout\" as lib;\nprint(`library version ${lib::version()}`);\n",
    );
    lock(&dir.join("deploy"), false);
    assert!(run(dir).contains("library version one"));

    write(&dir.join("lib/rollout.rhai"), "fn version() { \"two\" }\n");
    lock(&dir.join("deploy"), true);
    assert!(run(dir).contains("library version two"));
}

#[test]
fn an_unknown_flake_input_is_an_error_naming_the_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(&dir.join("lib/flake.nix"), "{ outputs = { self }: { }; }\n");
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
    write(
        &dir.join("deploy/uses-lib.rhai"),
        "import \"flake:opz/rollout\" as lib;\n",
    );
    lock(&dir.join("deploy"), false);
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .arg("run")
        .arg(dir.join("deploy/uses-lib.rhai"))
        .arg("--flake")
        .arg(format!("path:{}", dir.join("deploy").display()))
        .env("NIXDEPLOY_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no input `opz`") && stderr.contains("ops"),
        "{stderr}"
    );
    assert!(stderr.contains("uses-lib.rhai:1:8"), "{stderr}");
}
