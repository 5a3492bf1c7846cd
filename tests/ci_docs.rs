//! docs/ci.md's GitHub Actions workflow and GitLab CI job, run as written: their commands are
//! read from the doc and executed without a TTY in a fleet repo against sandbox hosts.

mod common;
#[path = "common/repo.rs"]
mod repo;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Sandbox;

const DOC: &str = include_str!("../docs/ci.md");

/// The body of the first fenced block of `lang` after `heading`.
fn block(heading: &str, lang: &str) -> String {
    let from = DOC
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading} in docs/ci.md"));
    let fence = format!("```{lang}\n");
    let start = DOC[from..].find(&fence).expect("fenced block") + from + fence.len();
    let end = DOC[start..].find("```").unwrap() + start;
    DOC[start..end].to_string()
}

/// One workflow step: its `run:` script (None for `uses:`), `if: always()`, and whether it is
/// marked `ci-test: skip`.
#[derive(Debug, Default)]
struct Step {
    name: String,
    run: Option<String>,
    always: bool,
    skip: bool,
}

/// The steps of the workflow's one job: a `- ` item at the steps' indentation starts a step;
/// `run: |` takes the more-indented lines after it.
fn workflow_steps(yaml: &str) -> Vec<Step> {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "steps:")
        .expect("steps:");
    let indent = lines[at + 1].len() - lines[at + 1].trim_start().len();
    let mut steps: Vec<Step> = Vec::new();
    let mut i = at + 1;
    while i < lines.len() {
        let line = lines[i];
        let depth = line.len() - line.trim_start().len();
        let text = line.trim_start().trim_start_matches("- ");
        if depth == indent && line.trim_start().starts_with("- ") {
            steps.push(Step::default());
        }
        let step = steps.last_mut().unwrap();
        if let Some(name) = text.strip_prefix("name: ") {
            step.name = name.to_string();
        } else if text.starts_with("uses: ") && step.name.is_empty() {
            step.name = text.to_string();
        }
        step.always |= text == "if: always()";
        step.skip |= text.contains("ci-test: skip");
        if let Some(run) = text.strip_prefix("run: ") {
            if run == "|" {
                let body_indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                let mut body = String::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty()
                        || lines[i + 1].len() - lines[i + 1].trim_start().len() >= body_indent)
                {
                    i += 1;
                    body.push_str(lines[i].get(body_indent..).unwrap_or(""));
                    body.push('\n');
                }
                step.run = Some(body);
            } else {
                step.run = Some(format!("{run}\n"));
            }
        }
        i += 1;
    }
    steps
}

/// The `- ` items of the GitLab job's `key:` list.
fn gitlab_list(yaml: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("no {key}:"));
    lines[at + 1..]
        .iter()
        .take_while(|l| l.trim_start().starts_with("- ") || l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .map(str::to_string)
        .collect()
}

/// A fleet repo as docs/ci.md describes it: nixdeploy.nix from `init` naming `./ssh_config`,
/// whose top is the doc's block; the pinned `known_hosts`; no key on disk.
struct Fleet {
    sb: Sandbox,
    tmp: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let sb = Sandbox::up(3);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        fs::create_dir_all(&dir).unwrap();
        repo::nixos_only_flake(&sb, &dir);
        let config = block("The top of `ssh_config`", "sshconfig") + &repo::host_entries(&sb);
        fs::write(dir.join("ssh_config"), config).unwrap();
        fs::copy(sb.dir().join("known_hosts"), dir.join("known_hosts")).unwrap();
        let fleet = Fleet { sb, tmp };
        fleet.nixdeploy_in_repo(&["init"]);
        repo::wire_in(&dir);
        fleet
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn nixdeploy_in_repo(&self, args: &[&str]) {
        self.sb
            .nixdeploy(args)
            .current_dir(self.dir())
            .env("NIX_CONFIG", "substituters =")
            .success();
    }

    /// What every documented command runs with: `nixdeploy` on PATH, the secret, the
    /// sandbox's state dir, no binary cache; stdin is not a terminal.
    fn env(&self) -> BTreeMap<String, String> {
        let bin = repo::bin_dir(self.tmp.path());
        let key = fs::read_to_string(self.sb.dir().join("id_ed25519")).unwrap();
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
        env.insert("DEPLOY_SSH_KEY".into(), key);
        env.insert("NIX_CONFIG".into(), "substituters =".into());
        env.insert(
            "NIXDEPLOY_STATE_DIR".into(),
            self.sb.state_dir().display().to_string(),
        );
        env
    }
}

/// Runs `script` with `bash -e -o pipefail` (how both CI systems run a step) in `dir`.
fn bash(script: &str, dir: &Path, env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new("bash")
        .args([
            "--noprofile",
            "--norc",
            "-e",
            "-o",
            "pipefail",
            "-c",
            script,
        ])
        .current_dir(dir)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_AGENT_PID")
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Ends the ssh-agent a run started, by the pid it reported, if it is still there.
fn stop_agent(env: &BTreeMap<String, String>) {
    if let Some(pid) = env.get("SSH_AGENT_PID").and_then(|p| p.parse::<i32>().ok()) {
        // SAFETY: kill has no memory preconditions; the pid is the agent this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// The workflow's steps as the runner would: in order, `GITHUB_ENV` carried between steps,
/// after a failure only `if: always()` steps. Returns (step name, output) of each step run.
fn run_workflow(fleet: &Fleet, tag: &str) -> Vec<(String, std::process::Output)> {
    let steps = workflow_steps(&block("## GitHub Actions", "yaml"));
    let mut env = fleet.env();
    let github_env = fleet.tmp.path().join(format!("github-env-{tag}"));
    fs::write(&github_env, "").unwrap();
    let sock = fleet.tmp.path().join(format!("agent-{tag}.sock"));
    env.insert("SSH_AUTH_SOCK".into(), sock.display().to_string());
    env.insert("GITHUB_ACTIONS".into(), "true".into());
    env.insert("GITHUB_ENV".into(), github_env.display().to_string());
    let mut failed = false;
    let mut ran = Vec::new();
    for step in steps {
        let Some(run) = step.run.as_deref() else {
            continue;
        };
        if step.skip || (failed && !step.always) {
            continue;
        }
        let out = bash(run, &fleet.dir(), &env);
        failed |= !out.status.success();
        for line in fs::read_to_string(&github_env).unwrap().lines() {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.into(), v.into());
            }
        }
        ran.push((step.name.clone(), out));
    }
    stop_agent(&env);
    ran
}

fn step<'a>(ran: &'a [(String, std::process::Output)], name: &str) -> &'a std::process::Output {
    &ran.iter()
        .find(|(n, _)| n.contains(name))
        .unwrap_or_else(|| {
            panic!(
                "step {name} did not run: {:?}",
                ran.iter().map(|r| &r.0).collect::<Vec<_>>()
            )
        })
        .1
}

fn show(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_documented_github_workflow_deploys_and_its_canary_gate_fails_the_job() {
    if !common::skip_unless_root() {
        return;
    }
    let fleet = Fleet::new();
    let ran = run_workflow(&fleet, "ok");
    for (name, out) in &ran {
        assert!(out.status.success(), "step {name}: {}", show(out));
    }
    let events = fs::read_to_string(fleet.dir().join("deploy.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["exit_code"], 0, "{events}");
    let deployed: Vec<String> = (1..=3)
        .map(|i| {
            fleet
                .sb
                .current_system(&format!("h{i}"))
                .unwrap_or_default()
        })
        .collect();
    for (i, path) in deployed.iter().enumerate() {
        assert!(
            path.contains(&format!("nixos-system-h{}-1", i + 1)),
            "{path}"
        );
    }

    // A new generation whose activation fails on the canary: the gate stops the job.
    repo::new_generation(&fleet.dir(), "fail-activation");
    let ran = run_workflow(&fleet, "canary-fails");
    let canary = step(&ran, "Canary");
    assert_eq!(canary.status.code(), Some(1), "{}", show(canary));
    let stderr = String::from_utf8_lossy(&canary.stderr);
    assert!(
        stderr.contains("::error title=nixdeploy%3A h1 "),
        "{}",
        show(canary)
    );
    assert!(step(&ran, "Stop the ssh agent").status.success());
    for i in 2..=3 {
        let h = format!("h{i}");
        assert_eq!(
            fleet.sb.current_system(&h).as_deref(),
            Some(deployed[i - 1].as_str()),
            "{h} was touched past a failed canary"
        );
    }
    let events = fs::read_to_string(fleet.dir().join("deploy.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["exit_code"], 1, "{events}");
}

#[test]
fn the_documented_gitlab_job_deploys_without_a_tty() {
    if !common::skip_unless_root() {
        return;
    }
    let fleet = Fleet::new();
    let yaml = block("## GitLab CI", "yaml");
    let script = gitlab_list(&yaml, "script").join("\n");
    assert!(
        script.contains("nixdeploy run canary --yes --json > deploy.jsonl"),
        "{script}"
    );
    // The job's container ends its agent; here the shell does, on exit.
    let wrapped = format!("trap 'ssh-agent -k > /dev/null 2>&1' EXIT\n{script}\n");
    let out = bash(&wrapped, &fleet.dir(), &fleet.env());
    assert!(out.status.success(), "{}", show(&out));
    let events = fs::read_to_string(fleet.dir().join("deploy.jsonl")).unwrap();
    assert!(events
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    for i in 1..=3 {
        let h = format!("h{i}");
        assert!(fleet.sb.current_system(&h).is_some(), "{h} not deployed");
    }
}
