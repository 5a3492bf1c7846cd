//! Using nixdeploy from a user's own flake repo: `init`, the shipped runbooks behind `apply`,
//! `exec` and `run canary`, and the shell integration (`run X --help`, completions, man page).

mod common;
#[path = "common/repo.rs"]
mod repo;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{nixdeploy, Sandbox};

/// The sandbox's ssh config, copied into the repo: it reaches h1.. by those names.
fn user_repo(sb: &Sandbox, dir: &Path) {
    repo::nixos_only_flake(sb, dir);
    fs::copy(sb.ssh_config(), dir.join("ssh_config")).unwrap();
}

#[test]
fn a_flake_repo_is_set_up_by_init_then_applied_execed_and_canaried_with_shipped_runbooks() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    user_repo(&sb, dir);
    let here = |args: &[&str]| {
        sb.nixdeploy(args)
            .current_dir(dir)
            .env("NIX_CONFIG", "substituters =")
    };

    let out = here(&["init"]).success();
    assert!(out.stdout.contains("wrote ./nixdeploy.nix"), "{out}");
    assert!(out.stdout.contains("h1, h2, h3"), "{out}");
    let inventory = fs::read_to_string(dir.join("nixdeploy.nix")).unwrap();
    assert!(
        inventory.contains("sshConfig = \"./ssh_config\";"),
        "{inventory}"
    );
    assert!(dir.join("runbooks/example.rhai").is_file());
    // A second init keeps both files as they are.
    fs::write(dir.join("runbooks/example.rhai"), "// mine\n").unwrap();
    let again = here(&["init"]).success();
    assert!(again.stdout.contains("kept ./nixdeploy.nix"), "{again}");
    assert_eq!(
        fs::read_to_string(dir.join("runbooks/example.rhai")).unwrap(),
        "// mine\n"
    );
    repo::wire_in(dir);

    here(&["apply", "--on", "h1"]).success();
    let h1 = sb
        .current_system("h1")
        .expect("h1 runs a system after apply");
    assert!(h1.contains("nixos-system-h1-"), "{h1}");
    assert_eq!(sb.current_system("h2"), None, "apply --on h1 touched h2");

    let out = here(&["exec", "--", "uname", "-n"]).success();
    let text = format!("{}{}", out.stdout, out.stderr);
    for h in ["h1", "h2", "h3"] {
        assert!(
            text.contains(&format!("{h}   | {h}")),
            "{h} output not prefixed:\n{text}"
        );
        assert!(
            text.contains(&format!("{h}: exit 0")),
            "{h} status:\n{text}"
        );
    }
    let out = here(&[
        "exec",
        "--on",
        "h1,h2",
        "--",
        "test",
        "$(uname -n)",
        "=",
        "h1",
    ])
    .env("GITHUB_ACTIONS", "true")
    .output();
    out.assert_code(1);
    assert!(out.stdout.contains("h2: exit 1"), "{out}");
    assert!(
        out.stderr
            .contains("::error title=nixdeploy%3A exec failed on h2::"),
        "{out}"
    );

    here(&["run", "canary", "--set", "soak=2"]).success();
    for h in ["h1", "h2", "h3"] {
        let system = sb.current_system(h).unwrap_or_default();
        assert!(
            system.contains(&format!("nixos-system-{h}-")),
            "{h}: {system}"
        );
    }
}

#[test]
fn init_in_a_directory_without_hosts_says_what_is_missing_and_writes_nothing() {
    let repo = tempfile::tempdir().unwrap();
    fs::write(
        repo.path().join("flake.nix"),
        "{ outputs = { self }: { }; }\n",
    )
    .unwrap();
    let out = nixdeploy(&["init"]).current_dir(repo.path()).output();
    out.assert_code(4);
    assert!(out.stderr.contains("no nixosConfigurations"), "{out}");
    assert!(!repo.path().join("nixdeploy.nix").exists());
    assert!(!repo.path().join("runbooks").exists());
}

#[test]
fn a_shipped_runbook_is_found_by_name_and_a_file_of_that_name_wins() {
    let dir = tempfile::tempdir().unwrap();
    let out = nixdeploy(&["check", "canary"])
        .current_dir(dir.path())
        .success();
    assert!(out.stdout.contains("shipped with nixdeploy"), "{out}");
    assert!(!out.stdout.contains("shadows"), "{out}");
    fs::write(dir.path().join("canary"), "print(1);\n").unwrap();
    let out = nixdeploy(&["check", "canary"])
        .current_dir(dir.path())
        .success();
    assert!(out.stdout.contains("canary (file)"), "{out}");
    let out = nixdeploy(&["run", "canar"])
        .current_dir(dir.path())
        .output();
    out.assert_code(4);
    assert!(out.stderr.contains("did you mean `canary`"), "{out}");
    let out = nixdeploy(&["runbooks"]).success();
    for name in ["apply", "build", "canary", "exec", "rolling"] {
        assert!(out.stdout.contains(&format!("  {name} ")), "{name}: {out}");
    }
}

#[test]
fn checking_the_canary_runbook_in_this_checkout_reports_no_self_shadowing() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = nixdeploy(&["check", "runbooks/canary.rhai"])
        .current_dir(root)
        .success();
    assert!(!out.stdout.contains("shadows"), "{out}");
    assert!(out.stdout.contains("→ stdlib/checks.rhai"), "{out}");
}

#[test]
fn run_help_with_a_runbook_explains_every_flag_and_lists_the_runbooks_parameters() {
    let out = nixdeploy(&["run", "canary", "--help"]).success();
    for flag in [
        "--flake",
        "--on",
        "--lib",
        "--parallel",
        "--set",
        "--json",
        "--dry-run",
        "--yes",
        "--force-unlock",
        "--help",
    ] {
        let line = out
            .stdout
            .lines()
            .position(|l| l.trim_start().starts_with(flag) || l.contains(&format!(", {flag}")))
            .unwrap_or_else(|| panic!("{flag} missing:\n{}", out.stdout));
        let explanation = out.stdout.lines().nth(line + 1).unwrap_or_default().trim();
        assert!(
            !explanation.is_empty(),
            "{flag} has no explanation:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("Usage: nixdeploy run"), "{out}");
    for param in ["health", "command", "soak", "confirm"] {
        assert!(
            out.stdout.contains(&format!("  {param} ")),
            "{param}: {out}"
        );
    }
    let bare = nixdeploy(&["run", "--help"]).success();
    assert!(bare.stdout.contains("Shipped runbooks"), "{bare}");
}

#[test]
fn bash_completions_load_and_complete_ru_to_run_and_runbooks() {
    let script = nixdeploy(&["completions", "bash"]).success().stdout;
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(nixdeploy ru); COMP_CWORD=1; COMP_LINE='nixdeploy ru'; \
         COMP_POINT=${{#COMP_LINE}}; _nixdeploy nixdeploy ru nixdeploy; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.path().display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<&str> = words.lines().collect();
    got.sort();
    assert_eq!(got, ["run", "runbooks"], "{words}");
    let complete = |line: &str| -> Vec<String> {
        let words: Vec<&str> = line.split(' ').collect();
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let probe = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _nixdeploy_runbooks nixdeploy {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.path().display(),
            quoted.join(" "),
            words.len() - 1,
            quoted[words.len() - 1],
            quoted[words.len() - 2],
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&probe)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    Path::new(common::BIN).parent().unwrap().display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .current_dir(tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        got.sort();
        got
    };
    assert_eq!(complete("nixdeploy run can"), ["canary"]);
    assert_eq!(complete("nixdeploy run canary --set so"), ["soak="]);
    assert_eq!(
        complete("nixdeploy run rolling --on h1 --set "),
        ["batch=", "command=", "max_fail="]
    );
    for shell in ["zsh", "fish"] {
        let out = nixdeploy(&["completions", shell]).success();
        assert!(out.stdout.contains("nixdeploy"), "{shell}: {out}");
    }
}

#[test]
fn the_man_page_renders_with_every_subcommand() {
    let page = nixdeploy(&["man"]).success().stdout;
    assert!(
        page.starts_with(".ie") || page.contains(".TH nixdeploy"),
        "{page}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &page).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(file.path())
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    let text = match rendered {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).to_string(),
        // Without man(1), the roff itself must carry the sections.
        _ => page.clone(),
    };
    for needed in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "nixdeploy-apply",
        "nixdeploy-exec",
    ] {
        assert!(text.contains(needed), "{needed} missing:\n{text}");
    }
}

#[test]
fn man_out_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    nixdeploy(&["man", "--out"]).args(&[dir.path()]).success();
    for page in [
        "nixdeploy.1",
        "nixdeploy-run.1",
        "nixdeploy-apply.1",
        "nixdeploy-exec.1",
    ] {
        let text = fs::read_to_string(dir.path().join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}
