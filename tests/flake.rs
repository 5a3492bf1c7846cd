//! The top-level flake.nix, evaluated with stand-in inputs (tests/flake/stand-in.nix: a fake
//! nixpkgs with only the functions it calls) by the real `nix-instantiate`: its outputs, that
//! the package is this source with this Cargo.lock, and that its install script works against
//! the real binary. `nix build` itself needs nixpkgs from the network and is not run here.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn evaluate() -> Value {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--arg", "repo", REPO])
        .arg(Path::new(REPO).join("tests/flake/stand-in.nix"))
        .output()
        .expect("nix-instantiate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn the_flake_has_packages_apps_dev_shells_and_an_overlay_for_linux_and_darwin() {
    let f = evaluate();
    assert_eq!(
        strings(&f["outputs"]),
        ["apps", "devShells", "overlays", "packages"]
    );
    for system in [
        "x86_64-linux",
        "aarch64-linux",
        "x86_64-darwin",
        "aarch64-darwin",
    ] {
        assert_eq!(
            strings(&f["packages"][system]),
            ["default", "nixdeploy"],
            "{system}"
        );
        assert_eq!(f["apps"][system]["type"], "app", "{system}");
        assert_eq!(
            f["apps"][system]["program"],
            format!("/nix/store/stand-in-{system}-nixdeploy/bin/nixdeploy"),
            "the app runs {system}'s package"
        );
        let shell = strings(&f["devShells"][system]);
        for tool in [
            "cargo", "rustc", "clippy", "rustfmt", "openssh", "git", "tmux", "nix",
        ] {
            assert!(
                shell.contains(&tool),
                "{system} dev shell lacks {tool}: {shell:?}"
            );
        }
    }
    for system in ["x86_64-linux", "aarch64-linux"] {
        let shell = strings(&f["devShells"][system]);
        for tool in ["busybox-binary", "iproute2", "sudo"] {
            assert!(
                shell.contains(&tool),
                "{system} dev shell lacks {tool}: {shell:?}"
            );
        }
    }
    assert_eq!(
        f["overlay"], "/nix/store/stand-in-aarch64-linux-nixdeploy",
        "the overlay builds with the final package set"
    );
    assert_eq!(f["inputs"]["nixpkgs"], "github:NixOS/nixpkgs/nixos-25.11");
}

#[test]
fn the_package_is_this_source_built_with_its_cargo_lock() {
    let f = evaluate();
    let p = &f["package"];
    assert_eq!(p["builtWith"], "rustPlatform.buildRustPackage");
    assert_eq!(p["src"], REPO);
    assert_eq!(p["lockFile"], format!("{REPO}/Cargo.lock"));
    assert_eq!(
        p["name"],
        format!("nixdeploy-{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(p["mainProgram"], "nixdeploy");
    assert!(strings(&p["nativeBuildInputs"]).contains(&"installShellFiles"));
}

/// The postInstall hook, run by bash with the real binary as `$out/bin/nixdeploy` and the
/// nixpkgs setup functions replaced by ones that record what they were given.
#[test]
fn the_install_hook_installs_completions_and_man_pages_from_the_built_binary() {
    let f = evaluate();
    let hook = f["package"]["postInstall"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(out.join("bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nixdeploy"), out.join("bin/nixdeploy")).unwrap();
    let stubs = r#"
installShellCompletion() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --cmd) shift ;;
      --bash|--zsh|--fish) mkdir -p got/completions; cat "$2" > "got/completions/${1#--}"; shift ;;
    esac
    shift
  done
}
installManPage() { mkdir -p got/man; cp "$@" got/man/; }
wrapProgram() { printf '%s\n' "$@" > got/wrapped; }
"#;
    let script = format!("set -euo pipefail\n{stubs}\n{hook}");
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("out", &out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = work.path().join("got");
    for shell in ["bash", "zsh", "fish"] {
        let text = std::fs::read_to_string(got.join("completions").join(shell)).unwrap();
        assert!(
            text.contains("nixdeploy") && text.len() > 500,
            "{shell}: {text}"
        );
    }
    for page in ["nixdeploy.1", "nixdeploy-run.1", "nixdeploy-apply.1"] {
        assert!(got.join("man").join(page).is_file(), "{page} not installed");
    }
    let wrapped = std::fs::read_to_string(got.join("wrapped")).unwrap();
    assert!(wrapped.contains("--suffix\nPATH"), "{wrapped}");
}

#[test]
fn the_lock_pins_nixpkgs_to_a_full_revision_with_its_nar_hash() {
    let text = std::fs::read_to_string(Path::new(REPO).join("flake.lock")).unwrap();
    let lock: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(lock["version"], 7);
    assert_eq!(lock["nodes"]["root"]["inputs"]["nixpkgs"], "nixpkgs");
    let node = &lock["nodes"]["nixpkgs"];
    assert_eq!(node["original"]["ref"], "nixos-25.11");
    let rev = node["locked"]["rev"].as_str().unwrap();
    assert!(
        rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
        "{rev}"
    );
    let nar = node["locked"]["narHash"].as_str().unwrap();
    assert!(nar.starts_with("sha256-") && nar.len() == 51, "{nar}");
    assert_eq!(node["locked"]["type"], "github");
}
