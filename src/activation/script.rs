//! The shell scripts that run on targets: the detached activation watchdog, its observer, the
//! confirmation, and the plain rollback. Every value is passed in as a quoted variable assignment.

use std::time::Duration;

use super::Mode;
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
}

/// The watchdog script: sets the profile, runs `switch-to-configuration`, rolls back by itself
/// when that fails, and — armed — waits for a confirmation file, rolling back when none comes.
/// It records its progress in `state` — `activating`, `armed`, `confirmed`, `done`,
/// `rolled-back:<why>`, `failed:<why>`, `rollback-failed:<why>` — and announces each state in its
/// log as `@@nixdeploy-state <state>`, so an observer following the log learns it at once.
///
/// Armed, it sleeps on the `wake` FIFO until a confirmer or a rollback request writes to it (or
/// the confirm window ends): no polling on the target.
pub fn watchdog(a: &Activation) -> String {
    let head = format!(
        "PROFILE={}\nNEW={}\nMODE={}\nD={}\nMAGIC={}\nCONFIRM_SECS={}\nACT_TIMEOUT={}\n",
        quote(a.profile),
        quote(a.path),
        a.mode.as_str(),
        quote(&activation_dir(a.token)),
        if a.magic { 1 } else { 0 },
        a.confirm_timeout.as_secs_f64().ceil().max(1.0) as u64,
        a.activation_timeout.as_secs().max(1),
    );
    head + WATCHDOG_BODY
}

const WATCHDOG_BODY: &str = r#"set -u
state() { printf '%s\n' "$1" > "$D/state.tmp" && mv -f "$D/state.tmp" "$D/state"; printf '@@nixdeploy-state %s\n' "$1"; }
prev_link=$(readlink "$PROFILE" 2>/dev/null || true)
prev_system=$(readlink -f /run/current-system 2>/dev/null || true)
printf '%s\n' "$prev_link" > "$D/prev_link"
printf '%s\n' "$prev_system" > "$D/prev_system"
new_link=""
rollback() {
  state rolling-back
  if [ "$MODE" = switch ] || [ "$MODE" = boot ]; then
    if [ -n "$new_link" ] && [ "$new_link" != "$prev_link" ]; then
      if [ -n "$prev_link" ]; then
        ln -sfn "$prev_link" "$PROFILE.nixdeploy-tmp" && mv -fT "$PROFILE.nixdeploy-tmp" "$PROFILE"
      else
        rm -f "$PROFILE"
      fi
      rm -f "$(dirname "$PROFILE")/$new_link"
    fi
  fi
  if [ "$MODE" != boot ] && [ -n "$prev_system" ] && [ -x "$prev_system/bin/switch-to-configuration" ]; then
    m=switch; [ "$MODE" = test ] && m=test
    echo "nixdeploy: rolling back to $prev_system"
    if ! "$prev_system/bin/switch-to-configuration" "$m"; then state "rollback-failed:$1"; exit 1; fi
  fi
  state "rolled-back:$1"
}
state activating
if [ "$MODE" = switch ] || [ "$MODE" = boot ]; then
  if [ "$(readlink -f "$PROFILE" 2>/dev/null)" != "$NEW" ]; then
    nix-env -p "$PROFILE" --set "$NEW" || { state failed:profile; exit 1; }
  fi
  new_link=$(readlink "$PROFILE")
fi
printf '%s\n' "$new_link" > "$D/new_link"
timeout "$ACT_TIMEOUT" "$NEW/bin/switch-to-configuration" "$MODE"
rc=$?
if [ "$rc" -ne 0 ]; then
  why="exit-$rc"; [ "$rc" -eq 124 ] && why=timeout
  if [ "$MODE" = dry-activate ]; then state "failed:$why"; exit 1; fi
  rollback "activation-$why"; exit 1
fi
if [ "$MAGIC" = 1 ]; then
  rm -f "$D/wake"; mkfifo "$D/wake" || { rollback no-fifo; exit 1; }
  verdict() {
    if [ -e "$D/confirm" ]; then state confirmed; exit 0; fi
    if [ -e "$D/rollback" ]; then rollback requested; exit 0; fi
  }
  end=$(( $(date +%s) + CONFIRM_SECS ))
  state armed
  while :; do
    verdict
    left=$(( end - $(date +%s) ))
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
/// already runs `a.path` (`unchanged`) or lacks it (`missing`), else writes the watchdog (sent on
/// stdin) and starts it detached from the ssh session, under the activation lock, so it outlives
/// a dying connection or deployer; then follows its log (see [`FOLLOW`]).
///
/// Prints `@@nixdeploy-current`, `@@nixdeploy-profile` and `@@nixdeploy-link` lines (the
/// running system, the profile's target and its generation link), then the log.
///
/// `flock -o` keeps the lock in the `flock` process alone: without it every daemon that
/// `switch-to-configuration` forks inherits the lock's descriptor and holds the host's
/// activation lock for as long as it lives, refusing every later deployment.
pub fn start(a: &Activation) -> String {
    format!(
        "D={d}; PROFILE={profile}; NEW={new}; MODE={mode}; \
         sys=$(readlink -f /run/current-system 2>/dev/null); prof=$(readlink -f \"$PROFILE\" 2>/dev/null); \
         link=$(readlink \"$PROFILE\" 2>/dev/null); \
         printf '@@nixdeploy-current %s\\n@@nixdeploy-profile %s\\n@@nixdeploy-link %s\\n' \"$sys\" \"$prof\" \"$link\"; \
         u=; case $MODE in \
           switch) [ \"$sys\" = \"$NEW\" ] && [ \"$prof\" = \"$NEW\" ] && u=1;; \
           test) [ \"$sys\" = \"$NEW\" ] && u=1;; boot) [ \"$prof\" = \"$NEW\" ] && u=1;; esac; \
         if [ -n \"$u\" ]; then cat >/dev/null; echo '@@nixdeploy-state unchanged'; exit 0; fi; \
         if [ ! -x \"$NEW/bin/switch-to-configuration\" ]; then cat >/dev/null; echo '@@nixdeploy-state missing'; exit 0; fi; \
         mkdir -p \"$D\" && cat > \"$D/activate.sh\" && : > \"$D/log\" || {{ echo '@@nixdeploy-state failed:setup'; exit 1; }}; \
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

/// Follows the log in `$D` (from its first line) until the watchdog announces a verdict (any
/// state but `activating` and `rolling-back`); then prints the generation link it created.
/// `tail -f` is woken by the kernel when the log grows, so nothing polls.
const FOLLOW: &str = "f=\"$D/follow.$$\"; rm -f \"$f\"; mkfifo \"$f\" || exit 1; \
     tail -n +1 -f \"$D/log\" 2>/dev/null > \"$f\" & t=$!; \
     while IFS= read -r l; do printf '%s\\n' \"$l\"; \
       case \"$l\" in '@@nixdeploy-state '*) case \"${l#@@nixdeploy-state }\" in activating|rolling-back) ;; *) break;; esac;; esac; \
     done < \"$f\"; kill $t 2>/dev/null; rm -f \"$f\"; \
     nl=; read -r nl < \"$D/new_link\" 2>/dev/null; printf '@@nixdeploy-new-link %s\\n' \"$nl\"";

/// Confirms an armed activation (run over a brand-new connection): records the confirmation,
/// wakes the watchdog, and waits for it to acknowledge; prints the final state.
pub fn confirm(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; i=0; s=; read -r s < \"$D/state\" 2>/dev/null || s=missing; \
         while [ \"$s\" = activating ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); read -r s < \"$D/state\"; done; \
         if [ \"$s\" = armed ]; then touch \"$D/confirm\"; {wake} i=0; \
         while [ \"$s\" = armed ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); read -r s < \"$D/state\"; done; fi; \
         echo \"$s\"",
        wake = WAKE,
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

/// Prints the watchdog's current state.
pub fn read_state(token: &str) -> String {
    format!(
        "cat {}/state 2>/dev/null || echo missing",
        quote(&activation_dir(token))
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
    fn daemons_started_by_activation_do_not_inherit_the_lock() {
        assert!(start(&activation("/nix/store/abc")).contains("flock -o "));
    }

    #[test]
    fn scripts_are_valid_posix_shell() {
        for script in [
            watchdog(&activation("/nix/store/abc")),
            start(&activation("/nix/store/x y")),
            confirm("t"),
            request_rollback("t"),
            plain_rollback("/nix/var/nix/profiles/system"),
            probe("/nix/var/nix/profiles/system"),
        ] {
            crate::transport::assert_valid_shell(&script);
        }
    }
}
