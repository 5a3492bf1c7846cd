//! Shared end-to-end test harness: sandbox fleets brought up by the real binary, and a runner.
//!
//! Every test file that needs hosts does `mod common;` and starts with
//! `if !common::skip_unless_root() { return; }`, then `let sb = common::Sandbox::up(3);`.
//! Runs kept going in the background (and the run that sits on deploy locks) are in
//! [`background`]; the rollback tests' baseline deploy and "back on it" checks in [`rollback`].

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use tempfile::TempDir;

pub mod background;
pub mod rollback;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nixdeploy");

/// The flags every `nix` invocation in tests needs (flakes on, no binary cache).
pub const NIX_FLAGS: [&str; 6] = [
    "--extra-experimental-features",
    "nix-command flakes",
    "--option",
    "substituters",
    "",
    "--quiet",
];

/// `true` when the end-to-end tests can run (root on Linux). Otherwise prints why and returns
/// `false` so the test can return early — except under `CI`, where it panics: CI must run them.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = cfg!(target_os = "linux") && unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("end-to-end tests need root on Linux, and CI is set: refusing to skip");
    }
    eprintln!("skipped: end-to-end tests need root on Linux (set CI to make this a failure)");
    false
}

/// Starts a `nixdeploy` invocation with a fresh, private `NIXDEPLOY_STATE_DIR`.
pub fn nixdeploy<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let state = TempDir::new().expect("temp state dir");
    let mut run = Run::new(args, state.path());
    run.owned_state = Some(state);
    run
}

/// One invocation of the real binary, built up and then run with [`Run::output`].
pub struct Run {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    owned_state: Option<TempDir>,
}

impl Run {
    /// `nixdeploy args…` with `NIXDEPLOY_STATE_DIR=state_dir`.
    pub fn new<S: AsRef<OsStr>>(args: &[S], state_dir: &Path) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("NIXDEPLOY_STATE_DIR", state_dir)
            .env_remove("NIXDEPLOY_PATH");
        Run {
            cmd,
            stdin: None,
            owned_state: None,
        }
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Run {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Run {
        self.cmd.env(key, value);
        self
    }

    /// Runs in this working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Run {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds this to stdin (stdin is otherwise empty).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Run {
        self.stdin = Some(input.into());
        self
    }

    /// Runs to completion and captures everything.
    pub fn output(mut self) -> Outcome {
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("failed to start nixdeploy");
        let input = self.stdin.take().unwrap_or_default();
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .expect("failed to wait for nixdeploy");
        let _ = writer.join();
        Outcome::from_output(format!("{:?}", self.cmd), out)
    }

    /// Runs and asserts exit code 0.
    pub fn success(self) -> Outcome {
        let out = self.output();
        out.assert_success();
        out
    }

    /// Runs and asserts a non-zero exit code.
    pub fn failure(self) -> Outcome {
        let out = self.output();
        out.assert_failure();
        out
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
}

impl Outcome {
    /// Wraps a `std::process::Output`.
    pub fn from_output(command: String, out: Output) -> Outcome {
        Outcome {
            command,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, showing both streams, unless the command exited 0.
    pub fn assert_success(&self) -> &Outcome {
        assert!(self.status.success(), "expected success: {self}");
        self
    }

    /// Panics, showing both streams, unless the command exited non-zero.
    pub fn assert_failure(&self) -> &Outcome {
        assert!(!self.status.success(), "expected failure: {self}");
        self
    }

    /// Panics unless the command exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Outcome {
        assert_eq!(self.code(), Some(code), "unexpected exit code: {self}");
        self
    }

    /// Panics unless stderr contains `needle`.
    pub fn assert_stderr_contains(&self, needle: &str) -> &Outcome {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self}"
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    pub fn assert_stdout_contains(&self, needle: &str) -> &Outcome {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self}"
        );
        self
    }

    /// Stdout parsed as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }

    /// Stdout parsed as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  status: {}\n  stdout:\n{}\n  stderr:\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// How to bring up a [`Sandbox`]: `Sandbox::builder().hosts(8).builders(1).up()`.
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    hosts: usize,
    builders: usize,
    size_kib: u64,
    cache: bool,
    extra: Vec<String>,
}

impl SandboxBuilder {
    /// Also bring up the sandbox's binary cache host (`sandbox up --cache`).
    pub fn cache(mut self) -> Self {
        self.cache = true;
        self
    }

    /// Targets `h1`…`hN` (default 3).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Builders `b1`…`bN` (default 0).
    pub fn builders(mut self, n: usize) -> Self {
        self.builders = n;
        self
    }

    /// Closure size per host in KiB (default 64, small to keep tests quick).
    pub fn size_kib(mut self, kib: u64) -> Self {
        self.size_kib = kib;
        self
    }

    /// Hosts whose `deploy` login must type its password for sudo (`--sudo-password`).
    pub fn sudo_password(mut self, hosts: &[&str]) -> Self {
        self.extra
            .extend(["--sudo-password".to_string(), hosts.join(",")]);
        self
    }

    /// Every host runs its own Nix daemon, so `deploy` can use the store (`--nix-daemons`).
    pub fn nix_daemons(mut self) -> Self {
        self.extra.push("--nix-daemons".to_string());
        self
    }

    /// Hosts whose Nix daemon does not trust `deploy` (`--untrusted`).
    pub fn untrusted(mut self, hosts: &[&str]) -> Self {
        self.extra
            .extend(["--untrusted".to_string(), hosts.join(",")]);
        self
    }

    /// Runs `nixdeploy sandbox up` in a fresh temp dir and panics if it fails.
    pub fn up(self) -> Sandbox {
        let tmp = TempDir::new().expect("temp dir");
        let state = tmp.path().join("state");
        let dir = tmp.path().join("sandbox");
        fs::create_dir_all(&state).expect("state dir");
        let sandbox = Sandbox {
            dir,
            state,
            _tmp: tmp,
        };
        sandbox
            .nixdeploy(&["sandbox", "up"])
            .args(&sandbox.up_args(self.hosts, self.builders, self.size_kib))
            .args(if self.cache { &["--cache"][..] } else { &[] })
            .args(&self.extra)
            .success();
        sandbox
    }
}

/// A running sandbox fleet in its own temp dir; dropping it runs `nixdeploy sandbox down`.
pub struct Sandbox {
    dir: PathBuf,
    state: PathBuf,
    _tmp: TempDir,
}

impl Sandbox {
    /// A builder with 3 hosts, no builders, 64 KiB closures.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder {
            hosts: 3,
            builders: 0,
            size_kib: 64,
            cache: false,
            extra: Vec::new(),
        }
    }

    /// `n` hosts with the builder's defaults.
    pub fn up(n: usize) -> Sandbox {
        Sandbox::builder().hosts(n).up()
    }

    fn up_args(&self, hosts: usize, builders: usize, size_kib: u64) -> Vec<String> {
        vec![
            "--hosts".into(),
            hosts.to_string(),
            "--builders".into(),
            builders.to_string(),
            "--size-kib".into(),
            size_kib.to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]
    }

    /// A `nixdeploy` invocation sharing this test's `NIXDEPLOY_STATE_DIR` (journal, locks).
    pub fn nixdeploy<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        Run::new(args, &self.state)
    }

    /// `nixdeploy sandbox up` again on this dir (e.g. to check idempotence).
    pub fn up_again(&self, hosts: usize, builders: usize) -> Outcome {
        self.nixdeploy(&["sandbox", "up"])
            .args(&self.up_args(hosts, builders, 64))
            .output()
    }

    /// `nixdeploy sandbox status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        self.nixdeploy(&["sandbox", "status", "--json", "--dir"])
            .args(&[&self.dir])
            .success()
            .json()
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The per-test `NIXDEPLOY_STATE_DIR`.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The sandbox flake as a flake reference (`path:/…/flake`), for `--flake`.
    pub fn flake(&self) -> String {
        format!("path:{}", self.dir.join("flake").display())
    }

    /// The ssh config with a `Host` alias per host (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// `DIR/flake/fleet.json`.
    pub fn fleet_json_path(&self) -> PathBuf {
        self.dir.join("flake/fleet.json")
    }

    /// `fleet.json`, parsed.
    pub fn fleet_json(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.fleet_json_path()).expect("read fleet.json");
        serde_json::from_str(&text).expect("fleet.json is JSON")
    }

    /// Gives every host a fresh, never-built generation (a [`unique_rev`]), so the next deploy
    /// really builds, copies and activates.
    pub fn fresh_revs(&self) {
        let rev = unique_rev();
        self.edit_fleet(|v| {
            for (_, h) in v["hosts"].as_object_mut().expect("fleet.json has hosts") {
                h["rev"] = serde_json::json!(rev);
            }
        });
    }

    /// Edits `fleet.json` in place, e.g.
    /// `sb.edit_fleet(|f| { f["hosts"]["h1"]["behavior"] = "unhealthy".into(); f["hosts"]["h1"]["rev"] = 2.into(); })`.
    pub fn edit_fleet(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut fleet = self.fleet_json();
        edit(&mut fleet);
        let text = serde_json::to_string_pretty(&fleet).expect("serialise fleet.json");
        fs::write(self.fleet_json_path(), text + "\n").expect("write fleet.json");
    }

    /// Every host logs in as `deploy` (the sandbox's non-root login, with sudo) instead of root.
    pub fn as_deploy(&self) {
        self.edit_fleet(|f| f["defaults"] = serde_json::json!({ "targetUser": "deploy" }));
    }

    /// Gives `host` a new generation with `behavior` (`ok`, `fail-activation`, `cut-network`,
    /// `cut-network-late`, `block-ssh`, `inhibited`, `unhealthy`) by bumping its `rev`; returns
    /// the new rev.
    pub fn set_behavior(&self, host: &str, behavior: &str) -> u64 {
        let mut rev = 0;
        self.edit_fleet(|f| {
            let h = &mut f["hosts"][host];
            rev = h["rev"].as_u64().unwrap_or(1) + 1;
            h["rev"] = rev.into();
            h["behavior"] = behavior.into();
        });
        rev
    }

    /// Gives each of `hosts` a new generation with `behavior`, as [`Sandbox::set_behavior`] does.
    pub fn set_behavior_on(&self, hosts: &[&str], behavior: &str) {
        for host in hosts {
            self.set_behavior(host, behavior);
        }
    }

    /// Where `host`'s private `/nix`, `/run`, `/root` (as `root/`), `/etc/nix` and `/etc/ssh`
    /// live on the machine, so tests can look at its store and `/run` directly.
    pub fn host_root(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }

    /// Breaks `host` on purpose with `nixdeploy sandbox fault` (`no-tools`, `full-store`,
    /// `readonly-store`, `wrong-host-key`, `sshd-down`).
    pub fn fault(&self, host: &str, fault: &str) {
        let dir = self.dir().to_str().expect("utf-8 dir").to_string();
        self.nixdeploy(&["sandbox", "fault", host, fault, "--dir", &dir])
            .success();
    }

    /// `ssh -F <ssh_config> host cmd` (the command is one remote shell string).
    pub fn ssh(&self, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(host)
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("failed to run ssh")
    }

    /// Where `host`'s `/run/current-system` points, if anywhere.
    pub fn current_system(&self, host: &str) -> Option<String> {
        fs::read_link(self.host_root(host).join("run/current-system"))
            .ok()
            .map(|p| p.display().to_string())
    }

    /// The generation numbers of `host`'s system profile (`system-N-link`), ascending.
    pub fn profile_generations(&self, host: &str) -> Vec<u32> {
        let dir = self.host_root(host).join("nix/var/nix/profiles");
        let mut gens: Vec<u32> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix("system-")?
                        .strip_suffix("-link")?
                        .parse()
                        .ok()
                })
                .collect()
            })
            .unwrap_or_default();
        gens.sort_unstable();
        gens
    }

    /// Where `host`'s system profile points (`/nix/store/…`), if it has one.
    pub fn profile_target(&self, host: &str) -> Option<String> {
        let link = self.host_root(host).join("nix/var/nix/profiles/system");
        let gen = fs::read_link(&link).ok()?;
        let target = fs::read_link(link.with_file_name(gen)).ok()?;
        Some(target.display().to_string())
    }

    /// Whether `host`'s own store holds `path` (`/nix/store/…` or its base name).
    pub fn store_has(&self, host: &str, path: &str) -> bool {
        let base = path.trim_start_matches("/nix/store/");
        let base = base.split('/').next().unwrap_or_default();
        !base.is_empty() && self.host_root(host).join("nix/store").join(base).exists()
    }

    /// Every path in `host`'s own store, as `/nix/store/…`.
    pub fn store_paths(&self, host: &str) -> BTreeSet<String> {
        fs::read_dir(self.host_root(host).join("nix/store"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .map(|n| format!("/nix/store/{n}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The activations `host` recorded, oldest first: `"<mode> <out path>"` lines.
    pub fn activations(&self, host: &str) -> Vec<String> {
        fs::read_to_string(
            self.host_root(host)
                .join("run/nixdeploy-sandbox/activations"),
        )
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
    }

    /// The state of every system activation `host`'s watchdog knows about (`armed`, `confirmed`,
    /// `done`, `rolled-back…`), one per activation, in no particular order.
    pub fn activation_states(&self, host: &str) -> Vec<String> {
        fs::read_dir(self.host_root(host).join("run/nixdeploy"))
            .map(|rd| {
                rd.filter_map(|e| fs::read_to_string(e.ok()?.path().join("state")).ok())
                    .map(|s| s.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `host`'s `/run/nixdeploy-sandbox/health` (`healthy`/`unhealthy`), if written.
    pub fn health(&self, host: &str) -> Option<String> {
        fs::read_to_string(self.host_root(host).join("run/nixdeploy-sandbox/health"))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// `host`'s boot default (what it runs after a reboot), from
    /// `/nix/var/nixdeploy-sandbox/boot`, if it has one.
    pub fn boot_default(&self, host: &str) -> Option<String> {
        fs::read_to_string(self.host_root(host).join("nix/var/nixdeploy-sandbox/boot"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// `host`'s boot id as its own processes see it.
    pub fn boot_id(&self, host: &str) -> String {
        let out = self.ssh(host, "cat /proc/sys/kernel/random/boot_id");
        assert!(out.status.success(), "cannot read {host}'s boot id");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Simulates a reboot of `host` (`nixdeploy sandbox reboot`): every process in it ends, its
    /// `/run` is emptied, it gets a new boot id and comes up on its boot default.
    pub fn reboot(&self, host: &str) {
        self.nixdeploy(&["sandbox", "reboot", host, "--dir"])
            .args(&[&self.dir])
            .success();
    }

    /// The directory first on `PATH` in every ssh session on `host`, as seen from the machine
    /// (stand-in commands go here).
    pub fn host_bin(&self, host: &str) -> PathBuf {
        self.host_root(host).join("nix/var/nixdeploy-sandbox/bin")
    }

    /// The `hosts` entries of the sandbox's state file (`state.json`).
    fn state_hosts(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.dir.join("state.json")).expect("state.json");
        let state: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
        state["hosts"].as_array().cloned().unwrap_or_default()
    }

    /// The sshd pid of every host, from the sandbox's state file.
    pub fn sshd_pids(&self) -> Vec<u32> {
        self.state_hosts()
            .iter()
            .filter_map(|h| h["sshd_pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// The network namespace names of every host, from the sandbox's state file.
    pub fn netns_names(&self) -> Vec<String> {
        self.state_hosts()
            .iter()
            .filter_map(|h| h["netns"].as_str().map(str::to_owned))
            .collect()
    }

    /// Builds `host`'s toplevel on the machine and returns its out path.
    pub fn build_toplevel(&self, host: &str) -> String {
        let attr = format!(
            "{}#nixosConfigurations.{host}.config.system.build.toplevel",
            self.flake()
        );
        let out = Command::new("nix")
            .args(NIX_FLAGS)
            .args(["build", "--no-link", "--json", &attr])
            .output()
            .expect("failed to run nix build");
        assert!(
            out.status.success(),
            "nix build {attr} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("nix build --json");
        json[0]["outputs"]["out"]
            .as_str()
            .expect("out path")
            .to_owned()
    }

    /// Asserts that `host` runs the toplevel the sandbox flake builds for it now (built here
    /// with [`Sandbox::build_toplevel`]); `context` ends the message.
    pub fn assert_runs_its_toplevel(&self, host: &str, context: impl std::fmt::Display) {
        let want = self.build_toplevel(host);
        assert_eq!(
            self.current_system(host).as_deref(),
            Some(want.as_str()),
            "{host} does not run its toplevel: {context}"
        );
    }

    /// `nix copy --no-check-sigs --to ssh-ng://host path` through the sandbox's ssh config.
    pub fn nix_copy(&self, host: &str, path: &str) -> Output {
        Command::new("nix")
            .args(NIX_FLAGS)
            .args([
                "copy",
                "--no-check-sigs",
                "--to",
                &format!("ssh-ng://{host}"),
                path,
            ])
            .env("NIX_SSHOPTS", format!("-F {}", self.ssh_config().display()))
            .output()
            .expect("failed to run nix copy")
    }

    /// Brings the sandbox down now (also done on drop) and asserts it worked.
    pub fn down(&self) -> Outcome {
        self.nixdeploy(&["sandbox", "down", "--dir"])
            .args(&[&self.dir])
            .success()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = self
            .nixdeploy(&["sandbox", "down", "--dir"])
            .args(&[&self.dir])
            .output();
        if !out.status.success() {
            eprintln!("warning: sandbox down failed: {out}");
        }
    }
}

/// A `rev` no other test run has used, for a generation that must really be built: the
/// deploying machine's store is shared by every sandbox and every run, so an old rev's
/// toplevel may already be there.
pub fn unique_rev() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    1000 + (nanos / 1000 + u64::from(std::process::id()) * 1_000_003 + n) % 1_000_000_000_000
}

/// Whether a process is alive (zombies count as gone: they hold nothing but a pid, and the
/// machine's init may never reap them).
pub fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// The names of every network namespace on the machine.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("failed to run ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Whether a network interface exists on the machine.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Mount points in this process's mount namespace that lie under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Writes `body` as a runbook next to the sandbox (in the test's temp dir) and returns its path.
pub fn runbook(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    let path = sb.dir().parent().expect("sandbox parent").join(name);
    std::fs::write(&path, body).expect("write runbook");
    path
}

/// `nixdeploy run RUNBOOK --flake <sandbox flake> extra…` with the sandbox's state dir, not yet
/// started: for runs a test signals, kills or samples while they go on (it sets the stdio).
pub fn run_command(sb: &Sandbox, book: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .env_remove("NIXDEPLOY_PATH")
        .arg("run")
        .arg(book)
        .args(["--flake", &sb.flake()])
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

/// `nixdeploy run RUNBOOK --flake <sandbox flake> extra…`, to completion.
pub fn run(sb: &Sandbox, book: &Path, extra: &[&str]) -> Outcome {
    sb.nixdeploy(&["run"])
        .args(&[book.as_os_str()])
        .args(&["--flake", &sb.flake()])
        .args(extra)
        .output()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
