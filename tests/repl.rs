//! `nixdeploy repl` driven in a real pseudo-terminal (tmux) against a sandbox fleet.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

/// A tmux session running the REPL; killed when dropped.
struct Pane {
    name: String,
}

impl Pane {
    fn start(sb: &common::Sandbox) -> Pane {
        let name = format!("ndrepl-{}", std::process::id());
        let cmd = format!(
            "env NIXDEPLOY_STATE_DIR={} {} repl --flake {}",
            sb.state_dir().display(),
            common::BIN,
            sb.flake()
        );
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                &name,
                &cmd,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux did not start");
        Pane { name }
    }

    fn keys(&self, keys: &[&str]) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
    }

    fn text(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-S", "-1000", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls until the last line on the screen is an empty prompt.
    fn wait_prompt(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let text = self.text();
            if text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end() == "nixdeploy>")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no prompt within {limit:?}:\n{}", self.text());
    }

    /// Polls until `needle` has appeared `count` times, within `limit`.
    fn wait_for(&self, needle: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.text().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "`{needle}` (x{count}) did not appear within {limit:?}:\n{}",
            self.text()
        );
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

#[test]
fn repl_completes_cancels_runs_deploys_and_documents() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = common::Sandbox::up(2);
    let pane = Pane::start(&sb);
    pane.wait_for("nixdeploy>", 1, Duration::from_secs(60));

    pane.keys(&["let who = \"h", "Tab"]);
    pane.wait_for("let who = \"h1", 1, Duration::from_secs(5));
    pane.keys(&["C-u"]);

    pane.keys(&["exec(hosts(), \"sleep 30\")", "Enter"]);
    std::thread::sleep(Duration::from_millis(1500));
    let cancelled = Instant::now();
    pane.keys(&["C-c"]);
    pane.wait_for("was stopped", 2, Duration::from_secs(15));
    pane.wait_prompt(Duration::from_secs(15));
    eprintln!("prompt back after {:?}", cancelled.elapsed());
    assert!(cancelled.elapsed() < Duration::from_secs(10));

    pane.keys(&["exec(host(\"h1\"), \"echo alive\")", "Enter"]);
    pane.wait_for("h1   | alive", 1, Duration::from_secs(30));
    pane.wait_prompt(Duration::from_secs(10));

    pane.keys(&["let r = activate(copy(build(hosts()))); r.ok", "Enter"]);
    pane.wait_for("true", 1, Duration::from_secs(300));
    pane.wait_prompt(Duration::from_secs(10));
    for h in ["h1", "h2"] {
        assert_eq!(sb.current_system(h), Some(sb.build_toplevel(h)));
    }

    pane.keys(&[":help exec", "Enter"]);
    pane.wait_for("uname -r", 1, Duration::from_secs(5));
    pane.keys(&["C-d"]);
}
