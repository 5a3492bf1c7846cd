//! Runs a test keeps going in the background while it acts on the hosts: started, signalled,
//! killed or waited for, and the run that sits on deploy locks for the lock tests.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{eventually, run_command, runbook, Outcome, Sandbox};

/// `nixdeploy run RUNBOOK --flake <sandbox flake> extra…` going on in the background; its output
/// is read as it comes, so the run never blocks on a full pipe.
pub struct BackgroundRun {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl BackgroundRun {
    /// Starts `book` on the sandbox with the sandbox's state dir.
    pub fn start(sb: &Sandbox, book: &Path, extra: &[&str]) -> BackgroundRun {
        let mut child = run_command(sb, book, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nixdeploy in the background");
        let stdout = drain(child.stdout.take().expect("stdout pipe"));
        let stderr = drain(child.stderr.take().expect("stderr pipe"));
        BackgroundRun {
            child,
            stdout,
            stderr,
        }
    }

    /// The run's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGTERM`) to the run and asserts it was delivered.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill -{sig} {}", self.pid());
    }

    /// SIGKILL, then reaps the run: no handler, no destructor, no last word to the hosts. Its
    /// output is dropped (ssh connections it left behind may still hold the pipes open).
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9 the background run");
        self.child.wait().expect("reap the background run");
    }

    /// Waits for the run to end by itself and returns what it printed; after `limit` it is
    /// killed and the test fails.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let ended = eventually(limit, || {
            self.child
                .try_wait()
                .expect("poll the background run")
                .is_some()
        });
        if !ended {
            let _ = self.child.kill();
            panic!("nixdeploy still running after {limit:?}");
        }
        let status = self.child.wait().expect("reap the background run");
        Outcome::from_output(
            "nixdeploy run (in the background)".into(),
            std::process::Output {
                status,
                stdout: self.stdout.join().expect("stdout reader"),
                stderr: self.stderr.join().expect("stderr reader"),
            },
        )
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Starts `hold.rhai`, a run that takes the deploy lock of each of `hosts` (through
/// `upload_key`, key `held`) and then sits on it for a minute, and waits until every one of
/// them names it as the lock's owner.
pub fn hold_deploy_locks(sb: &Sandbox, hosts: &[&str]) -> BackgroundRun {
    let book = runbook(
        sb,
        "hold.rhai",
        &format!(
            r#"upload_key(hosts("{}"), #{{ name: "held", text: "held" }}); sleep(60);"#,
            hosts.join(",")
        ),
    );
    let holder = BackgroundRun::start(sb, &book, &[]);
    let held = eventually(Duration::from_secs(60), || {
        hosts.iter().all(|h| {
            std::fs::read_to_string(sb.host_root(h).join("run/nixdeploy/deploy.owner"))
                .is_ok_and(|o| o.contains("hold.rhai"))
                && sb.host_root(h).join("run/keys/held").exists()
        })
    });
    assert!(
        held,
        "the holding run never took the deploy lock of {hosts:?}"
    );
    holder
}
