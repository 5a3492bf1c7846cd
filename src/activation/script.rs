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
/// It records its progress in `state`: `activating`, `armed`, `confirmed`, `done`,
/// `rolled-back:<why>`, `failed:<why>`, `rollback-failed:<why>`.
pub fn watchdog(a: &Activation) -> String {
    let head = format!(
        "PROFILE={}\nNEW={}\nMODE={}\nD={}\nMAGIC={}\nCONFIRM_TICKS={}\nACT_TIMEOUT={}\n",
        quote(a.profile),
        quote(a.path),
        a.mode.as_str(),
        quote(&activation_dir(a.token)),
        if a.magic { 1 } else { 0 },
        a.confirm_timeout.as_millis() / 100,
        a.activation_timeout.as_secs().max(1),
    );
    head + WATCHDOG_BODY
}

const WATCHDOG_BODY: &str = r#"set -u
state() { printf '%s\n' "$1" > "$D/state.tmp" && mv -f "$D/state.tmp" "$D/state"; }
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
  state armed
  i=0
  while [ "$i" -lt "$CONFIRM_TICKS" ]; do
    if [ -e "$D/confirm" ]; then state confirmed; exit 0; fi
    if [ -e "$D/rollback" ]; then rollback requested; exit 0; fi
    sleep 0.1
    i=$((i + 1))
  done
  if [ -e "$D/confirm" ]; then state confirmed; exit 0; fi
  rollback no-confirmation
  exit 0
fi
state done
"#;

/// Uploads the watchdog (from stdin) and starts it detached from the ssh session, under the
/// activation lock, so it outlives a dying connection or deployer.
///
/// `flock -o` keeps the lock in the `flock` process alone: without it every daemon that
/// `switch-to-configuration` forks inherits the lock's descriptor and holds the host's
/// activation lock for as long as it lives, refusing every later deployment.
pub fn launch(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "set -e; mkdir -p {d}; cat > {d}/activate.sh; \
         (setsid flock -o {lock} sh {d}/activate.sh </dev/null >{d}/log 2>&1 &); echo launched",
        lock = quote(&format!("{STATE_DIR}/activation.lock")),
    )
}

/// Streams the activation log until the watchdog leaves `activating`, then prints
/// `@@nixdeploy-state <state>`.
pub fn observe(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; tail -n +1 -f \"$D/log\" 2>/dev/null & t=$!; \
         while :; do s=; read -r s < \"$D/state\" 2>/dev/null; \
         case \"$s\" in ''|activating|rolling-back) sleep 0.1;; *) break;; esac; done; \
         sleep 0.05; kill $t 2>/dev/null; printf '\\n@@nixdeploy-state %s\\n' \"$s\""
    )
}

/// Confirms an armed activation (run over a brand-new connection) and waits for the watchdog
/// to acknowledge; prints the final state.
pub fn confirm(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; i=0; s=$(cat \"$D/state\" 2>/dev/null || echo missing); \
         while [ \"$s\" = activating ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); read -r s < \"$D/state\"; done; \
         if [ \"$s\" = armed ]; then touch \"$D/confirm\"; i=0; \
         while [ \"$s\" = armed ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); read -r s < \"$D/state\"; done; fi; \
         echo \"$s\""
    )
}

/// Asks an armed watchdog to roll back now and waits for it; prints the final state.
pub fn request_rollback(token: &str) -> String {
    let d = quote(&activation_dir(token));
    format!(
        "D={d}; touch \"$D/rollback\"; i=0; s=$(cat \"$D/state\"); \
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
        assert!(s.contains("CONFIRM_TICKS=300\n"));
        assert!(s.contains("MAGIC=1\n"));
    }

    #[test]
    fn daemons_started_by_activation_do_not_inherit_the_lock() {
        assert!(launch("t").contains("flock -o "));
    }

    #[test]
    fn scripts_are_valid_posix_shell() {
        for script in [
            watchdog(&activation("/nix/store/abc")),
            launch("t"),
            observe("t"),
            confirm("t"),
            request_rollback("t"),
            plain_rollback("/nix/var/nix/profiles/system"),
            probe("/nix/var/nix/profiles/system"),
        ] {
            crate::transport::assert_valid_shell(&script);
        }
    }
}
