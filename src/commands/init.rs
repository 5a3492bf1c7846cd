//! `nixdeploy init`: in a user's flake repo, write a starter inventory (`nixdeploy.nix`) from
//! the hosts the flake already has, and a `runbooks/` directory with a commented example.
//! It never overwrites a file: what exists is left alone and reported.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde::Deserialize;

use crate::exit::{Exit, Failure};

/// What the flake already declares, read with one `nix eval`.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Found {
    /// `nixosConfigurations` names.
    pub nixos: Vec<String>,
    /// `deploy.nodes` names (deploy-rs).
    pub deploy: Vec<String>,
    /// Node names of a colmena hive (`colmena` or `colmenaHive` output).
    pub colmena: Vec<String>,
    /// Whether the flake already has a `nixdeploy` output.
    pub nixdeploy: bool,
}

/// The expression that lists the flake's hosts; `NIXDEPLOY_INIT_FLAKE` names the flake.
const PROBE: &str = r#"
let
  f = builtins.getFlake (builtins.getEnv "NIXDEPLOY_INIT_FLAKE");
  names = set: builtins.attrNames set;
  hive = f.colmena or (f.colmenaHive or { });
in {
  nixos = names (f.nixosConfigurations or { });
  deploy = names ((f.deploy or { }).nodes or { });
  colmena = builtins.filter (n: n != "meta" && n != "defaults") (names hive);
  nixdeploy = f ? nixdeploy;
}
"#;

/// The commented example runbook `init` writes.
const EXAMPLE: &str = include_str!("init/example.rhai");

/// Reads what `dir`'s flake declares.
pub fn probe(dir: &Path) -> anyhow::Result<Found> {
    let flake = dir.display().to_string();
    let reference = crate::fleet::eval::resolve(&flake)?;
    probe_ref(&flake, &reference)
}

fn probe_ref(flake: &str, reference: &crate::fleet::eval::FlakeRef) -> anyhow::Result<Found> {
    let output = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--impure",
            "--expr",
            PROBE,
        ])
        .env("NIXDEPLOY_INIT_FLAKE", &reference.nix_ref)
        .output()
        .context("failed to run `nix eval`; is nix installed and on PATH?")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::input(format!(
            "failed to read the hosts of flake '{flake}'{}",
            crate::fleet::eval::summarize_nix_error(&stderr)
        ))
        .into());
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("failed to read the JSON of `nix eval` for flake '{flake}'"))
}

/// The starter inventory for `hosts`; `ssh_config` when the repo has one next to flake.nix.
pub fn snippet(hosts: &[String], ssh_config: bool) -> String {
    let mut out = String::from(
        "# Written by `nixdeploy init`: a starter inventory (the schema is in nixdeploy's\n\
         # docs/flake-schema.md). Wire it into flake.nix's outputs:\n\
         #\n\
         #   nixdeploy = import ./nixdeploy.nix { inherit self; };\n\
         #\n\
         # Until then nixdeploy reads nixosConfigurations directly (every configuration a host,\n\
         # reached by its name through your ssh config).\n\
         { self }:\n{\n",
    );
    if ssh_config {
        out.push_str("  # ssh reads this file (-F) for every host: aliases, users, ports, keys.\n");
        out.push_str("  sshConfig = \"./ssh_config\";\n");
    } else {
        out.push_str("  # sshConfig = \"./ssh_config\";   # an ssh config just for the fleet\n");
    }
    out.push_str("  defaults = {\n    # targetUser = \"root\";\n  };\n  hosts = {\n");
    for h in hosts {
        let _ = writeln!(
            out,
            "    {} = {{\n      targetHost = \"{h}\";  # the ssh destination\n      tags = [ ];  # select with --on @tag; tag one host \"canary\"\n    }};",
            nix_attr(h)
        );
    }
    out.push_str("  };\n}\n");
    out
}

/// A host name as a Nix attribute name (quoted unless it is a plain identifier).
fn nix_attr(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''));
    if plain {
        name.to_string()
    } else {
        format!("\"{name}\"")
    }
}

/// Writes `path` unless it exists; says which happened. Returns whether it wrote.
fn write_new(path: &Path, text: &str, report: &mut String) -> anyhow::Result<bool> {
    use std::io::Write as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            let _ = writeln!(report, "wrote {}", path.display());
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = writeln!(
                report,
                "kept {} (it exists; not overwritten)",
                path.display()
            );
            Ok(false)
        }
        Err(e) => Err(Failure::input(format!("cannot create {}: {e}", path.display())).into()),
    }
}

/// Runs `nixdeploy init` in `dir`.
pub fn run(dir: &Path) -> anyhow::Result<Exit> {
    let flake = dir.display().to_string();
    let reference = crate::fleet::eval::resolve(&flake)?;
    let found = probe_ref(&flake, &reference)?;
    let mut report = String::new();
    let mut written = Vec::new();
    if found.nixdeploy {
        let _ = writeln!(
            report,
            "the flake already has a `nixdeploy` output; no inventory written"
        );
    } else if !found.nixos.is_empty() {
        let ssh_config = dir.join("ssh_config").is_file();
        if write_new(
            &dir.join("nixdeploy.nix"),
            &snippet(&found.nixos, ssh_config),
            &mut report,
        )? {
            written.push("nixdeploy.nix");
        }
        let _ = writeln!(
            report,
            "  {} host(s) from nixosConfigurations: {}",
            found.nixos.len(),
            found.nixos.join(", ")
        );
        let _ = writeln!(
            report,
            "  next: add `nixdeploy = import ./nixdeploy.nix {{ inherit self; }};` to flake.nix's outputs"
        );
    } else if !found.deploy.is_empty() {
        let _ = writeln!(
            report,
            "deploy-rs nodes found ({}): nixdeploy reads `deploy.nodes` as they are; no inventory written",
            found.deploy.join(", ")
        );
    } else if !found.colmena.is_empty() {
        let _ = writeln!(
            report,
            "a colmena hive found ({}): nixdeploy does not read hives; add `nixosConfigurations` \
             built from the same modules, then run `nixdeploy init` again, or write a `nixdeploy` \
             output (docs/flake-schema.md)",
            found.colmena.join(", ")
        );
    } else {
        return Err(Failure::input(format!(
            "the flake in {} has no nixosConfigurations, deploy.nodes or colmena hive to start from; \
             add one, or write a `nixdeploy` output by hand (docs/flake-schema.md)",
            dir.display()
        ))
        .into());
    }
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks)
        .with_context(|| format!("cannot create {}", runbooks.display()))?;
    if write_new(&runbooks.join("example.rhai"), EXAMPLE, &mut report)? {
        written.push("runbooks/example.rhai");
    }
    if reference.nix_ref.starts_with("git+file:") && !written.is_empty() {
        let _ = writeln!(
            report,
            "the flake is in a git work tree, so Nix sees only tracked files: git add {}",
            written.join(" ")
        );
    }
    let _ = writeln!(
        report,
        "try: nixdeploy hosts; nixdeploy apply --on HOST; nixdeploy run runbooks/example.rhai\n\
         shipped runbooks (nixdeploy runbooks): {}",
        super::shipped::names().join(", ")
    );
    print!("{report}");
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_runbook_compiles_and_declares_its_parameters() {
        let mut session =
            crate::engine::Session::new(None, rhai::Map::new(), vec![], Default::default());
        if let Err(e) = session.compile("runbooks/example.rhai", EXAMPLE) {
            panic!("{}", e.rendered);
        }
        let params = crate::engine::params::declared("example.rhai", EXAMPLE).unwrap();
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["mode", "check"]);
    }

    #[test]
    fn the_snippet_lists_every_host_and_parses_as_nix() {
        let text = snippet(&["web-1".into(), "db.1".into()], true);
        assert!(text.contains("web-1 = {"), "{text}");
        assert!(text.contains("\"db.1\" = {"), "{text}");
        assert!(text.contains("sshConfig = \"./ssh_config\";"), "{text}");
        let out = std::process::Command::new("nix-instantiate")
            .args(["--parse", "-E", &text])
            .output();
        if let Ok(out) = out {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
