//! The shell scripts that run on targets: the detached activation watchdog, its observer, the
//! confirmation, and the plain rollback. Each remote step is one script string built by a pure
//! function; every value is passed in as a quoted variable assignment.

use std::time::Duration;

use super::{Mode, OnRefusal};
use crate::transport::quote;

/// Where nixdeploy keeps its per-activation state on a target (in `/run`: gone on reboot).
pub const STATE_DIR: &str = "/run/nixdeploy";

/// The state directory of one activation.
pub fn activation_dir(token: &str) -> String {
    format!("{STATE_DIR}/{token}")
}

/// Parameters of one activation.
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    /// The profile to set (`/nix/var/nix/profiles/system`).
    pub profile: &'a str,
    /// The new system path.
    pub path: &'a str,
    /// How to activate.
    pub mode: Mode,
    /// Unique id of this activation.
    pub token: &'a str,
    /// Arm the watchdog that rolls back unless confirmed.
    pub magic: bool,
    /// How long the target waits for confirmation.
    pub confirm_timeout: Duration,
    /// How long `switch-to-configuration` may run.
    pub activation_timeout: Duration,
    /// What to do when NixOS refuses a live switch (switch inhibitors).
    pub on_refusal: OnRefusal,
}

/// The watchdog script: runs `switch-to-configuration`, rolls back by itself when that fails,
/// and — armed — waits for a confirmation file, rolling back when none comes.
///
/// `switch` with magic rollback is *test first, commit after confirmation*: the new system is
/// activated with `test` (running, but profile and boot default unchanged) and only the
/// confirmation sets the profile (`nix-env -p PROFILE --set`) and the boot default
/// (`switch-to-configuration boot`). A host that reboots before that boots its previous system.
///
/// The state is kept in `$D/state` (see [`super::protocol::WatchdogState`]); each change is also
/// announced in the log as a wake-up line, but the verdict is only ever read from the file. The
/// confirm window is measured on `/proc/uptime`, a monotonic clock a wall-clock step leaves alone.
///
/// Armed, it sleeps on the `wake` FIFO until a confirmer or a rollback request writes to it (or
/// the confirm window ends): no polling on the target.
pub fn watchdog(a: &Activation) -> String {
    let head = format!(
        "PROFILE={}\nNEW={}\nMODE={}\nD={}\nMAGIC={}\nCONFIRM_SECS={}\nACT_TIMEOUT={}\nON_REFUSAL={}\n",
        quote(a.profile),
        quote(a.path),
        a.mode.as_str(),
        quote(&activation_dir(a.token)),
        if a.magic { 1 } else { 0 },
        a.confirm_timeout.as_secs_f64().ceil().max(1.0) as u64,
        a.activation_timeout.as_secs().max(1),
        a.on_refusal.as_str(),
    );
    head + WATCHDOG_BODY
}

const WATCHDOG_BODY: &str = r#"set -u
# Every state change goes to `state` first (the verdict the deployer reads), then a wake-up line
# to the log (which only tells a follower to look at `state` again).
state() { printf '%s\n' "$1" > "$D/state.tmp" && mv -f "$D/state.tmp" "$D/state"; printf '@@nixdeploy-state %s\n' "$1"; }
# Seconds since boot: a monotonic clock that NTP steps and clock settings leave alone.
uptime_secs() { read -r up _ < /proc/uptime; echo "${up%%.*}"; }
prev_link=$(readlink "$PROFILE" 2>/dev/null || true)
prev_system=$(readlink -f /run/current-system 2>/dev/null || true)
printf '%s\n' "$prev_link" > "$D/prev_link"
printf '%s\n' "$prev_system" > "$D/prev_system"
new_link=""
# switch with magic rollback tests first: the profile and the boot default change only once
# the activation is confirmed, so a host that reboots before that boots its previous system.
LATER=0; ACT=$MODE
if [ "$MODE" = switch ] && [ "$MAGIC" = 1 ]; then LATER=1; ACT=test; fi
committing=0
set_profile() {
  if [ "$(readlink -f "$PROFILE" 2>/dev/null)" != "$NEW" ]; then
    nix-env -p "$PROFILE" --set "$NEW" || return 1
  fi
  new_link=$(readlink "$PROFILE")
  printf '%s\n' "$new_link" > "$D/new_link"
}
rollback() {
  state rolling-back
  if [ -n "$new_link" ] && [ "$new_link" != "$prev_link" ]; then
    if [ -n "$prev_link" ]; then
      ln -sfn "$prev_link" "$PROFILE.nixdeploy-tmp" && mv -fT "$PROFILE.nixdeploy-tmp" "$PROFILE"
    else
      rm -f "$PROFILE"
    fi
    rm -f "$(dirname "$PROFILE")/$new_link"
  fi
  if [ "$MODE" != boot ] && [ -n "$prev_system" ] && [ -x "$prev_system/bin/switch-to-configuration" ]; then
    # An uncommitted test-first activation never touched the boot default: `test` suffices.
    m=switch
    if [ "$MODE" = test ] || { [ "$LATER" = 1 ] && [ "$committing" = 0 ]; }; then m=test; fi
    echo "nixdeploy: rolling back to $prev_system"
    if ! "$prev_system/bin/switch-to-configuration" "$m"; then state "rollback-failed:$1"; exit 1; fi
  fi
  state "rolled-back:$1"
}
state activating
# NixOS switch inhibitors: `check` runs the pre-switch checks and changes nothing.
if { [ "$ACT" = switch ] || [ "$ACT" = test ]; } && [ -e "$NEW/switch-inhibitors" ]; then
  if ! "$NEW/bin/switch-to-configuration" check; then
    echo "nixdeploy: switch-to-configuration refused a live switch to $NEW (pre-switch checks)"
    if [ "$ON_REFUSAL" = boot ]; then
      set_profile || { state failed:profile; exit 1; }
      if "$NEW/bin/switch-to-configuration" boot; then state staged; exit 0; fi
      MODE=boot; rollback "activation-exit-$?"; exit 1
    fi
    state refused; exit 0
  fi
fi
if [ "$ACT" = switch ] || [ "$ACT" = boot ]; then
  set_profile || { state failed:profile; exit 1; }
fi
timeout "$ACT_TIMEOUT" "$NEW/bin/switch-to-configuration" "$ACT"
rc=$?
if [ "$rc" -ne 0 ]; then
  why="exit-$rc"; [ "$rc" -eq 124 ] && why=timeout
  if [ "$MODE" = dry-activate ]; then state "failed:$why"; exit 1; fi
  rollback "activation-$why"; exit 1
fi
if [ "$MAGIC" = 1 ]; then
  rm -f "$D/wake"; mkfifo "$D/wake" || { rollback no-fifo; exit 1; }
  verdict() {
    if [ -e "$D/confirm" ]; then
      if [ "$LATER" = 1 ]; then
        committing=1; state committing
        set_profile || { rollback commit-profile; exit 1; }
        "$NEW/bin/switch-to-configuration" boot || { rollback "commit-boot-exit-$?"; exit 1; }
      fi
      state confirmed; exit 0
    fi
    if [ -e "$D/rollback" ]; then rollback requested; exit 0; fi
  }
  end=$(( $(uptime_secs) + CONFIRM_SECS ))
  printf '%s\n' "$end" > "$D/armed_until"
  state armed
  while :; do
    verdict
    left=$(( end - $(uptime_secs) ))
    [ "$left" -gt 0 ] || break
    # Blocks until a confirmer or a rollback request opens the FIFO, or the window ends.
    timeout "$left" sh -c 'read -r x < "$1"' sh "$D/wake" >/dev/null 2>&1
  done
  verdict
  rollback no-confirmation
  exit 0
fi
state done
"#;

/// The one command that starts an activation: reads what the host runs, stops there when it
/// already runs `a.path` (`unchanged`) or lacks it (`no-system`), else writes the watchdog (sent
/// on stdin) and starts it detached from the ssh session, under the activation lock, so it
/// outlives a dying connection or deployer; then follows its log (see [`FOLLOW`]).
///
/// Prints `@@nixdeploy-current`, `@@nixdeploy-profile`, `@@nixdeploy-link` and
/// `@@nixdeploy-boot` lines (the running system, the profile's target, its generation link and
/// the boot id), then the log.
///
/// `flock -o` keeps the lock in the `flock` process alone: without it every daemon that
/// `switch-to-configuration` forks inherits the lock's descriptor and holds the host's
/// activation lock for as long as it lives, refusing every later deployment.
pub fn start(a: &Activation) -> String {
    format!(
        "D={d}; PROFILE={profile}; NEW={new}; MODE={mode}; \
         sys=$(readlink -f /run/current-system 2>/dev/null); prof=$(readlink -f \"$PROFILE\" 2>/dev/null); \
         link=$(readlink \"$PROFILE\" 2>/dev/null); boot=; read -r boot < /proc/sys/kernel/random/boot_id; \
         printf '@@nixdeploy-current %s\\n@@nixdeploy-profile %s\\n@@nixdeploy-link %s\\n@@nixdeploy-boot %s\\n' \"$sys\" \"$prof\" \"$link\" \"$boot\"; \
         u=; case $MODE in \
           switch) [ \"$sys\" = \"$NEW\" ] && [ \"$prof\" = \"$NEW\" ] && u=1;; \
           test) [ \"$sys\" = \"$NEW\" ] && u=1;; boot) [ \"$prof\" = \"$NEW\" ] && u=1;; esac; \
         if [ -n \"$u\" ]; then cat >/dev/null; echo '@@nixdeploy-verdict unchanged'; exit 0; fi; \
         if [ ! -x \"$NEW/bin/switch-to-configuration\" ]; then cat >/dev/null; echo '@@nixdeploy-verdict no-system'; exit 0; fi; \
         mkdir -p \"$D\" && cat > \"$D/activate.sh\" && : > \"$D/log\" || {{ echo '@@nixdeploy-verdict failed:setup'; exit 1; }}; \
         (setsid flock -o {lock} sh \"$D/activate.sh\" </dev/null >>\"$D/log\" 2>&1 &); \
         {follow}",
        d = quote(&activation_dir(a.token)),
        profile = quote(a.profile),
        new = quote(a.path),
        mode = a.mode.as_str(),
        lock = quote(&format!("{STATE_DIR}/activation.lock")),
        follow = FOLLOW,
    )
}

/// Follows the log in `$D` (from its first line), relaying every line with a `|` in front so
/// nothing the activation prints can pass for a protocol line. After each line it reads the
/// `state` file, and stops once that holds a verdict (any state but `activating`,
/// `rolling-back` and `committing`): a line in the log is only a wake-up, never the verdict.
/// Then prints `@@nixdeploy-verdict <state>` and the generation link the activation created.
/// `tail -f` is woken by the kernel when the log grows, so nothing polls.
const FOLLOW: &str = "f=\"$D/follow.$$\"; rm -f \"$f\"; mkfifo \"$f\" || exit 1; \
     tail -n +1 -f \"$D/log\" 2>/dev/null > \"$f\" & t=$!; s=; \
     while IFS= read -r l; do printf '|%s\\n' \"$l\"; \
       s=; read -r s < \"$D/state\" 2>/dev/null; \
       case \"$s\" in ''|activating|rolling-back|committing) ;; *) break;; esac; \
     done < \"$f\"; kill $t 2>/dev/null; rm -f \"$f\"; \
     printf '@@nixdeploy-verdict %s\\n' \"$s\"; \
     nl=; read -r nl < \"$D/new_link\" 2>/dev/null; printf '@@nixdeploy-new-link %s\\n' \"$nl\"";

/// Prints what a fresh look at an activation shows, one per line: the watchdog's state
/// (`absent` without a state file), the boot id, `/run/current-system`, the profile's target
/// and, when armed, the seconds left in its confirm window (parsed by [`super::protocol::Observed`]).
const OBSERVE: &str = "s=; read -r s < \"$D/state\" 2>/dev/null; b=; read -r b < /proc/sys/kernel/random/boot_id; \
     w=; if [ \"$s\" = armed ] && read -r e < \"$D/armed_until\" 2>/dev/null; then read -r up _ < /proc/uptime; w=$(( e - ${up%%.*} )); fi; \
     printf '%s\\n%s\\n%s\\n%s\\n%s\\n' \"${s:-absent}\" \"$b\" \"$(readlink -f /run/current-system 2>/dev/null)\" \"$(readlink -f \"$PROFILE\" 2>/dev/null)\" \"$w\"";

/// Confirms an armed activation (run over a brand-new connection): records the confirmation,
/// wakes the watchdog, and waits up to about 10 s for it to commit; then prints what
/// [`read_state`] prints. A confirmation that loses the race with the timeout shows the rollback.
pub fn confirm(token: &str, profile: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; PROFILE={p}; i=0; s=; read -r s < \"$D/state\" 2>/dev/null; \
         while [ \"$s\" = activating ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); read -r s < \"$D/state\"; done; \
         if [ \"$s\" = armed ]; then touch \"$D/confirm\"; {wake} i=0; \
         while {{ [ \"$s\" = armed ] || [ \"$s\" = committing ] || [ \"$s\" = rolling-back ]; }} && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); read -r s < \"$D/state\"; done; fi; \
         {observe}",
        p = quote(profile),
        wake = WAKE,
        observe = OBSERVE,
    )
}

/// Wakes an armed watchdog sleeping on `$D/wake` (in the background: a watchdog that already
/// saw the flag never opens the FIFO, and the writer gives up after 5 s).
const WAKE: &str = "timeout 5 sh -c 'echo x > \"$1\"' sh \"$D/wake\" </dev/null >/dev/null 2>&1 &";

/// Asks an armed watchdog to roll back now and waits for it; prints the final state.
pub fn request_rollback(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; touch \"$D/rollback\"; {WAKE} i=0; s=$(cat \"$D/state\"); \
         while [ \"$s\" = armed ] || [ \"$s\" = rolling-back ]; do [ $i -lt 600 ] || break; sleep 0.1; i=$((i+1)); s=$(cat \"$D/state\"); done; \
         echo \"$s\""
    )
}

/// Looks at an activation (over a fresh connection): prints its state, the boot id, the running
/// system and the profile's target, one per line.
pub fn read_state(token: &str, profile: &str) -> String {
    format!(
        "D={}; PROFILE={}; {OBSERVE}",
        quote(&activation_dir(token)),
        quote(profile)
    )
}

/// Reads what a host runs: `/run/current-system` and the profile, one per line.
pub fn probe(profile: &str) -> String {
    format!(
        "readlink -f /run/current-system 2>/dev/null || echo; readlink -f {p} 2>/dev/null || echo; readlink {p} 2>/dev/null || echo",
        p = quote(profile)
    )
}

/// Moves the profile to its previous generation and activates it (`rollback` on a host that
/// has no armed activation). Prints `rolled-back <path>` or `no-previous`.
pub fn plain_rollback(profile: &str) -> String {
    format!("PROFILE={}\n{}", quote(profile), PLAIN_ROLLBACK_BODY)
}

const PLAIN_ROLLBACK_BODY: &str = r#"set -u
dir=$(dirname "$PROFILE"); base=$(basename "$PROFILE")
cur=$(readlink "$PROFILE" 2>/dev/null || true)
curn=${cur#"$base"-}; curn=${curn%-link}
prev=$(ls "$dir" | sed -n "s/^$base-\([0-9][0-9]*\)-link\$/\1/p" | sort -n | awk -v c="$curn" '$1 < c' | tail -n 1)
if [ -z "$prev" ]; then echo no-previous; exit 3; fi
ln -sfn "$base-$prev-link" "$PROFILE.nixdeploy-tmp" && mv -fT "$PROFILE.nixdeploy-tmp" "$PROFILE"
"$PROFILE/bin/switch-to-configuration" switch || { echo "activation-failed"; exit 4; }
echo "rolled-back $(readlink -f "$PROFILE")"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(path: &str) -> Activation<'_> {
        Activation {
            profile: "/nix/var/nix/profiles/system",
            path,
            mode: Mode::Switch,
            token: "tok1",
            magic: true,
            confirm_timeout: Duration::from_secs(30),
            activation_timeout: Duration::from_secs(240),
            on_refusal: OnRefusal::Fail,
        }
    }

    #[test]
    fn watchdog_parameters_are_quoted() {
        let s = watchdog(&activation("/nix/store/x y"));
        assert!(s.starts_with(
            "PROFILE=/nix/var/nix/profiles/system\nNEW='/nix/store/x y'\nMODE=switch\n"
        ));
        assert!(s.contains("CONFIRM_SECS=30\n"));
        assert!(s.contains("MAGIC=1\n"));
    }

    #[test]
    fn the_confirm_window_runs_on_the_monotonic_clock_not_the_wall_clock() {
        let s = watchdog(&activation("/nix/store/abc"));
        assert!(s.contains("/proc/uptime"));
        for wall in ["date", "EPOCHSECONDS", "%(%s)T"] {
            assert!(
                !s.contains(wall),
                "the watchdog reads the wall clock ({wall})"
            );
        }
    }

    #[test]
    fn switch_with_magic_rollback_tests_first_and_commits_on_confirmation() {
        let s = watchdog(&activation("/nix/store/abc"));
        assert!(s.contains("LATER=1; ACT=test"));
        let committing = s.find("state committing").expect("a commit step");
        let boot = s[committing..].find("switch-to-configuration\" boot");
        assert!(
            boot.is_some(),
            "the commit makes the new system the boot default"
        );
    }

    /// Runs [`FOLLOW`] with a local `sh` against a log that an activation fills while it runs.
    #[test]
    fn an_activation_printing_a_state_line_does_not_end_the_follow() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("state"), "activating\n").unwrap();
        std::fs::write(dir.path().join("log"), "@@nixdeploy-state activating\n").unwrap();
        let writer = format!(
            "sleep 0.3; echo '@@nixdeploy-state done' >> {d}/log; sleep 0.3; \
             echo armed > {d}/state; echo '@@nixdeploy-state armed' >> {d}/log",
            d = quote(&d)
        );
        let script = format!("D={}; ({writer}) & {FOLLOW}", quote(&d));
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("|@@nixdeploy-state done\n"), "{text}");
        assert!(text.contains("@@nixdeploy-verdict armed\n"), "{text}");
        assert!(!text.contains("@@nixdeploy-verdict done"), "{text}");
    }

    #[test]
    fn daemons_started_by_activation_do_not_inherit_the_lock() {
        assert!(start(&activation("/nix/store/abc")).contains("flock -o "));
    }

    #[test]
    fn scripts_are_valid_posix_shell() {
        for script in [
            watchdog(&activation("/nix/store/abc")),
            start(&activation("/nix/store/x y")),
            confirm("t", "/p"),
            read_state("t", "/p"),
            request_rollback("t"),
            plain_rollback("/nix/var/nix/profiles/system"),
            probe("/nix/var/nix/profiles/system"),
        ] {
            crate::transport::assert_valid_shell(&script);
        }
    }
}
