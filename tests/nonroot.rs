//! Deploying as a non-root login (`targetUser = "deploy"`) on sandbox hosts with real sudo rules
//! and real per-host Nix daemons: escalation, the sudo password asked once, signed copies.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{runbook, Sandbox};

/// The prompt `--ask-sudo-password` writes to the terminal.
const PROMPT: &str = "sudo password for the fleet's logins";

fn sudo_password(sb: &Sandbox) -> String {
    fs::read_to_string(sb.dir().join("sudo-password"))
        .expect("the sandbox's sudo password")
        .trim()
        .to_string()
}

/// A runbook that changes every host in every way that needs root over a non-root login:
/// copy (and its deploy lock), activation with magic rollback, a key, and `exec` with sudo.
const MUTATE: &str = r#"
let built = build(hosts());
let copied = copy(built);
let activated = activate(copied, #{ confirm_timeout: 10 });
if !activated.ok { throw `activate failed on ${activated.failed}`; }
let k = upload_key(hosts(), #{ name: "nonroot.key", text: "k3y" });
if !k.ok { throw `upload_key failed on ${k.failed}`; }
let out = exec(hosts(), "id -u > /run/nonroot-ok; cat /run/nonroot-ok", #{ sudo: true });
for h in out.hosts { let n = h.name; let u = out[n].stdout; u.trim(); print(`${n} uid ${u}`); }
if !out.ok { throw "exec failed"; }
"#;

#[test]
fn sudo_exec_runs_as_root_through_passwordless_sudo_on_several_hosts() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.as_deploy();
    let book = runbook(
        &sb,
        "whoami.rhai",
        r#"
let root = exec(hosts(), "id -u", #{ sudo: true });
let login = exec(hosts(), "id -un");
for h in root.hosts {
    let n = h.name;
    let r = root[n].stdout;
    let l = login[n].stdout;
    r.trim();
    l.trim();
    print(`${n} root=${r} login=${l}`);
}
"#,
    );
    let out = common::run(&sb, &book, &[]);
    out.assert_success();
    for h in ["h1", "h2", "h3"] {
        out.assert_stdout_contains(&format!("{h} root=0 login=deploy"));
    }
}

#[test]
fn a_password_protected_host_without_the_password_fails_early_and_nothing_changes() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder()
        .hosts(2)
        .nix_daemons()
        .sudo_password(&["h1", "h2"])
        .up();
    sb.as_deploy();
    sb.fresh_revs();
    let toplevel = sb.build_toplevel("h1");
    let book = runbook(&sb, "mutate.rhai", MUTATE);
    let started = std::time::Instant::now();
    let out = common::run(&sb, &book, &[]);
    out.assert_failure();
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("sudo asks deploy for a password"), "{text}");
    assert!(text.contains("--ask-sudo-password"), "{text}");
    for h in ["h1", "h2"] {
        assert!(!sb.store_has(h, &toplevel), "{h} got the closure");
        assert!(
            !sb.host_root(h).join("run/nonroot-ok").exists(),
            "{h} ran the command"
        );
    }
}

#[test]
fn the_sudo_password_is_asked_once_on_a_terminal_for_many_hosts_and_leaks_nowhere() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder()
        .hosts(4)
        .nix_daemons()
        // h1 keeps its NOPASSWD rule: a mixed fleet, one password for the rest.
        .sudo_password(&["h2", "h3", "h4"])
        .up();
    sb.as_deploy();
    sb.fresh_revs();
    let all = ["h1", "h2", "h3", "h4"];
    let password = sudo_password(&sb);
    let book = runbook(&sb, "mutate.rhai", MUTATE);
    let samples = PsSampler::start(&password);
    let run = run_on_pty(&sb, &book, &["--json", "--ask-sudo-password"], &password);
    let leaks_in_ps = samples.stop();
    assert!(run.success, "the run failed:\n{}", run.transcript);
    assert_eq!(
        run.prompts, 1,
        "asked {} times:\n{}",
        run.prompts, run.transcript
    );
    for h in all {
        assert!(
            run.transcript.contains(&format!("{h} uid 0")),
            "{}",
            run.transcript
        );
        let ok = fs::read_to_string(sb.host_root(h).join("run/nonroot-ok")).unwrap();
        assert_eq!(ok.trim(), "0");
        sb.assert_runs_its_toplevel(h, &run.transcript);
        assert_eq!(sb.profile_target(h), sb.current_system(h), "{h}");
        assert!(sb.host_root(h).join("run/keys/nonroot.key").exists(), "{h}");
    }
    // The leak scan: terminal output (JSON events included), ps samples, the journal and state,
    // both stores, and the hosts' logs.
    assert!(
        !run.transcript.contains(&password),
        "the password is in the output"
    );
    assert_eq!(
        leaks_in_ps,
        Vec::<String>::new(),
        "the password was in a process"
    );
    let mut places: Vec<PathBuf> = vec![sb.state_dir().to_path_buf(), "/nix/store".into()];
    places.push("/nix/var/nix/db".into());
    for h in all {
        places.push(sb.host_root(h).join("nix"));
        places.push(sb.host_root(h).join("run"));
        places.push(sb.host_root(h).join("home"));
    }
    for place in places {
        let found = files_containing(&place, password.as_bytes());
        assert!(found.is_empty(), "the password is in {found:?}");
    }
    // The scan itself finds what is there: the sandbox keeps the password in one file.
    assert_eq!(
        files_containing(sb.dir(), password.as_bytes()),
        [sb.dir().join("sudo-password")]
    );
    assert!(
        fs::read_to_string(sb.host_root("h2").join("run/sudo.log"))
            .unwrap()
            .contains("COMMAND="),
        "sudo on h2 logged its commands to the host's own log"
    );
}

#[test]
fn ask_sudo_password_without_a_terminal_is_an_input_error_before_any_host() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(1).sudo_password(&["h1"]).up();
    sb.as_deploy();
    let book = runbook(
        &sb,
        "touch.rhai",
        r#"exec(hosts(), "touch /run/touched", #{ sudo: true });"#,
    );
    let mut cmd = common::run_command(&sb, &book, &["--ask-sudo-password"]);
    // SAFETY: setsid is async-signal-safe: the run has no controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("--ask-sudo-password needs a terminal"),
        "{stderr}"
    );
    assert!(!sb.host_root("h1").join("run/touched").exists());
}

#[test]
fn a_wrong_sudo_password_fails_the_host_with_incorrect_password() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).sudo_password(&["h2"]).up();
    sb.as_deploy();
    let book = runbook(
        &sb,
        "root.rhai",
        r#"let out = exec(hosts(), "id -u", #{ sudo: true });"#,
    );
    let run = run_on_pty(&sb, &book, &["--ask-sudo-password"], "not-the-password");
    assert!(!run.success, "{}", run.transcript);
    assert!(
        run.transcript
            .contains("on h2: sudo: incorrect password for deploy"),
        "{}",
        run.transcript
    );
}

#[test]
fn the_repl_asks_for_the_sudo_password_once_and_keeps_it_out_of_the_history() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder()
        .hosts(2)
        .sudo_password(&["h1", "h2"])
        .up();
    sb.as_deploy();
    let password = sudo_password(&sb);
    let run = drive_pty(
        &sb,
        &["repl", "--flake", &sb.flake()],
        &[
            ("nixdeploy>", "ask_sudo_password();\r"),
            (
                "nixdeploy>",
                "let r = exec(hosts(), \"id -u\", #{ sudo: true }); print(`ok=${r.ok}`);\r",
            ),
            ("ok=", "\r"),
            ("nixdeploy>", "\x04"),
        ],
        &password,
    );
    assert_eq!(run.prompts, 1, "{}", run.transcript);
    assert!(run.transcript.contains("ok=true"), "{}", run.transcript);
    assert!(
        !run.transcript.contains(&password),
        "the password was echoed"
    );
    let history = fs::read_to_string(sb.state_dir().join("repl_history")).unwrap_or_default();
    assert!(history.contains("ask_sudo_password"), "{history}");
    assert!(
        !history.contains(&password),
        "the password is in the history"
    );
    assert_eq!(
        files_containing(sb.state_dir(), password.as_bytes()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn an_untrusted_login_copies_signed_paths_and_without_a_key_is_told_what_to_configure() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(1).untrusted(&["h1"]).up();
    sb.as_deploy();
    sb.fresh_revs();
    let toplevel = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "copy.rhai",
        "let copied = copy(build(hosts())); if !copied.ok { throw `copy failed: ${copied.failed}`; }",
    );
    let out = common::run(&sb, &book, &[]);
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("does not trust deploy"), "{text}");
    assert!(
        text.contains("signingKey") && text.contains("--sign-with"),
        "{text}"
    );
    assert!(text.contains("trusted-public-keys"), "{text}");
    assert!(!sb.store_has("h1", &toplevel));

    let key = sb.dir().join("signing-key.sec");
    let out = common::run(&sb, &book, &["--sign-with", key.to_str().unwrap()]);
    out.assert_success();
    assert!(sb.store_has("h1", &toplevel), "h1 lacks the signed closure");

    // A key that cannot be read is an input error before any host is touched.
    let out = common::run(&sb, &book, &["--sign-with", "/nonexistent/key.sec"]);
    out.assert_code(4);
    out.assert_stderr_contains("--sign-with: cannot read the secret key /nonexistent/key.sec");
}

#[test]
fn host_accounts_stay_private_to_the_host() {
    if !common::skip_unless_root() {
        return;
    }
    let files = [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/sudoers",
        "/etc/hosts",
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let sb = Sandbox::builder().hosts(2).sudo_password(&["h2"]).up();
    let inside = sb.ssh(
        "h1",
        "getent passwd deploy; hostname -f 2>/dev/null || hostname",
    );
    let inside = String::from_utf8_lossy(&inside.stdout).to_string();
    assert!(inside.contains("deploy:x:"), "{inside}");
    let after: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert_eq!(before, after, "the machine's own account files changed");
    let machine = Command::new("getent")
        .args(["passwd", "deploy"])
        .output()
        .unwrap();
    let machine_has_deploy = machine.status.success();
    assert!(
        !machine_has_deploy || before[0].windows(7).any(|w| w == b"deploy:"),
        "the sandbox's login leaked into the machine"
    );
    assert!(!String::from_utf8_lossy(&fs::read("/etc/sudoers").unwrap()).contains("deploy ALL"));
}

/// What a run on a pseudo-terminal did.
struct PtyRun {
    success: bool,
    transcript: String,
    prompts: usize,
}

/// `nixdeploy run BOOK --flake <sandbox flake> extra…` with a pseudo-terminal as its
/// controlling terminal (and stdio), typing `password` each time the prompt appears.
fn run_on_pty(sb: &Sandbox, book: &Path, extra: &[&str], password: &str) -> PtyRun {
    let (book, flake) = (book.to_str().expect("utf-8 runbook path"), sb.flake());
    let mut args = vec!["run", book, "--flake", &flake];
    args.extend_from_slice(extra);
    drive_pty(sb, &args, &[], password)
}

/// Runs nixdeploy with `args` on a pseudo-terminal as [`run_on_pty`] does, and types each
/// `(after, input)` in turn once `after` has appeared (counted from the previous step's match).
fn drive_pty(sb: &Sandbox, args: &[&str], steps: &[(&str, &str)], password: &str) -> PtyRun {
    let (mut master, slave) = openpty();
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .env("TERM", "dumb")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; the child becomes a session leader whose
    // controlling terminal is the pty on its stdin.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("failed to start nixdeploy on a pty");
    drop(cmd);
    let mut transcript = Vec::new();
    let mut typed = 0;
    let mut step = 0;
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the child and its descendants closed the pty
            Ok(n) => transcript.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&transcript).to_string();
        let prompts = text.matches(PROMPT).count();
        if prompts > typed {
            master
                .write_all(format!("{password}\n").as_bytes())
                .unwrap();
            typed = prompts;
        }
        if let Some((after, input)) = steps.get(step) {
            if let Some(at) = text[seen..].find(after) {
                seen += at + after.len();
                master.write_all(input.as_bytes()).unwrap();
                step += 1;
            }
        }
    }
    let status = child.wait().unwrap();
    let transcript = String::from_utf8_lossy(&transcript).to_string();
    PtyRun {
        success: status.success(),
        prompts: transcript.matches(PROMPT).count(),
        transcript,
    }
}

fn openpty() -> (fs::File, fs::File) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; the name, termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both fds were just opened and are owned here.
    unsafe {
        (
            fs::File::from(OwnedFd::from_raw_fd(master)),
            fs::File::from(OwnedFd::from_raw_fd(slave)),
        )
    }
}

/// Samples every process's command line and environment while a run goes on.
struct PsSampler {
    done: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl PsSampler {
    fn start(secret: &str) -> PsSampler {
        let done = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (d, h, secret) = (done.clone(), hits.clone(), secret.as_bytes().to_vec());
        let thread = std::thread::spawn(move || {
            let mut samples = 0u32;
            while !d.load(Ordering::SeqCst) || samples == 0 {
                for entry in fs::read_dir("/proc").unwrap().flatten() {
                    let pid = entry.file_name();
                    for what in ["cmdline", "environ"] {
                        let data =
                            fs::read(Path::new("/proc").join(&pid).join(what)).unwrap_or_default();
                        if data.windows(secret.len()).any(|w| w == secret) {
                            h.lock()
                                .unwrap()
                                .push(format!("/proc/{}/{what}", pid.to_string_lossy()));
                        }
                    }
                }
                samples += 1;
                // Sampling, not waiting for anything: leave the CPUs to the run.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        PsSampler { done, hits, thread }
    }

    fn stop(self) -> Vec<String> {
        self.done.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        let hits = self.hits.lock().unwrap().clone();
        hits
    }
}

/// Files under `dir` (recursively, not following links) whose bytes contain `needle`
/// (`grep -rlF`, the needle on stdin rather than in its argv).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut grep = Command::new("grep")
        .args(["-rlF", "--binary-files=text", "-f", "-", "--"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("grep");
    let mut stdin = grep.stdin.take().unwrap();
    stdin.write_all(needle).unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let out = grep.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}
