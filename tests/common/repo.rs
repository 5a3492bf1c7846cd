//! A user's own fleet repo for end-to-end tests: a directory holding only a flake with
//! `nixosConfigurations` (the sandbox's busybox-built systems, so they activate on its hosts),
//! set up the way a user would with `nixdeploy init`. Used with `#[path]` by the tests that
//! need it, next to `mod common;`.

// Each test binary uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Sandbox, BIN};

/// Copies the sandbox flake's files into `dir` and writes a `flake.nix` without its
/// `nixdeploy` output: nixosConfigurations only, as in a repo that never used nixdeploy.
pub fn nixos_only_flake(sb: &Sandbox, dir: &Path) {
    let flake = sb.dir().join("flake");
    for file in ["fleet.json", "switch-to-configuration.sh"] {
        fs::copy(flake.join(file), dir.join(file)).unwrap();
    }
    let copied = Command::new("cp")
        .arg("-r")
        .arg(flake.join("bb"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copied.success());
    let text = fs::read_to_string(flake.join("flake.nix")).unwrap();
    let start = text
        .find("      nixdeploy = {")
        .expect("the sandbox flake's nixdeploy output");
    let end = text.rfind("    };\n}").unwrap();
    let only_nixos = format!("{}{}", &text[..start], &text[end..]);
    assert!(only_nixos.contains("nixosConfigurations") && !only_nixos.contains("nixdeploy ="));
    fs::write(dir.join("flake.nix"), only_nixos).unwrap();
}

/// What a user does after `nixdeploy init`: wire nixdeploy.nix into the flake's outputs.
pub fn wire_in(dir: &Path) {
    let path = dir.join("flake.nix");
    let text = fs::read_to_string(&path).unwrap();
    let wired = text.replacen(
        "      nixosConfigurations = ",
        "      nixdeploy = import ./nixdeploy.nix { inherit self; };\n      nixosConfigurations = ",
        1,
    );
    assert_ne!(text, wired);
    fs::write(path, wired).unwrap();
}

/// `Host hN` entries reaching the sandbox's hosts by their names (address and user from the
/// sandbox's own ssh config, nothing else), to follow a header of the repo's choosing.
pub fn host_entries(sb: &Sandbox) -> String {
    let status = sb.status();
    let mut out = String::new();
    for h in status["hosts"].as_array().unwrap() {
        out.push_str(&format!(
            "\nHost {}\n  HostName {}\n  User root\n",
            h["name"].as_str().unwrap(),
            h["address"].as_str().unwrap()
        ));
    }
    out
}

/// Gives every host in the repo's `fleet.json` a new generation; `h1`'s with `behavior`.
pub fn new_generation(dir: &Path, h1_behavior: &str) {
    let path = dir.join("fleet.json");
    let mut fleet: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    for (name, h) in fleet["hosts"].as_object_mut().unwrap() {
        let rev = h["rev"].as_u64().unwrap_or(1) + 1;
        h["rev"] = rev.into();
        if name == "h1" {
            h["behavior"] = h1_behavior.into();
        }
    }
    fs::write(path, serde_json::to_string_pretty(&fleet).unwrap()).unwrap();
}

/// A directory with `nixdeploy` in it, to put first on a documented command's PATH.
pub fn bin_dir(under: &Path) -> PathBuf {
    let bin = under.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let link = bin.join("nixdeploy");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, link).unwrap();
    }
    bin
}
