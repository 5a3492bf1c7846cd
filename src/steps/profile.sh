# Activates one profile that is not the system: nixdeploy runs this as root on the host with
#   sh -c <this script> nixdeploy-profile PROFILE PATH USER COMMAND TIMEOUT AUTO MAGIC CONFIRM CANARY
# PROFILE is the profile link, PATH the store path it should point at, USER who runs COMMAND
# (with $PROFILE set), TIMEOUT the seconds COMMAND may take, AUTO 1 to roll back when it fails,
# MAGIC 1 to roll back unless CANARY is removed (over a new connection) within CONFIRM seconds.
# It runs as root, or as USER itself when that is the ssh login (deploy-rs's sshUser = user).
# The last line says what happened: @@nixdeploy-profile unchanged|activated|armed|failed|rolled-back.
set -u
profile=$1 path=$2 user=$3 command=$4 timeout=$5 auto=$6 magic=$7 confirm=$8 canary=$9

say() { echo "@@nixdeploy-profile $1"; }

me=$(id -un)

# Runs the activation command of whatever the profile points at, as its user.
run_activation() {
  home=$(getent passwd "$user" | cut -d: -f6)
  if [ "$user" = "$me" ]; then
    timeout "$timeout" env PROFILE="$profile" HOME="${home:-/root}" USER="$user" sh -c "$command"
  else
    timeout "$timeout" runuser -u "$user" -- env PROFILE="$profile" HOME="${home:-/}" USER="$user" sh -c "$command"
  fi
}

# Points the profile back at what it pointed at before and activates that again.
roll_back() {
  if [ -n "$previous" ]; then
    nix-env -p "$profile" --set "$previous" >/dev/null 2>&1 && run_activation >&2 || true
  else
    rm -f "$profile"
  fi
}

dir=$(dirname "$profile")
mkdir -p "$dir" || exit 1
# A per-user profile directory belongs to its user, as Nix makes it.
if [ "$user" != "$me" ]; then chown "$user" "$dir" || exit 1; fi
previous=$(readlink -f "$profile" 2>/dev/null || true)
if [ "$previous" = "$path" ]; then
  say unchanged
  exit 0
fi
if ! nix-env -p "$profile" --set "$path" >&2; then
  say failed
  exit 1
fi
if ! run_activation >&2; then
  if [ "$auto" = 1 ]; then
    roll_back
    say rolled-back
  else
    say failed
  fi
  exit 1
fi
if [ "$magic" = 1 ]; then
  mkdir -p "$(dirname "$canary")" && : > "$canary" || exit 1
  # The watchdog outlives this connection: it rolls back unless the canary goes in time.
  (
    waited=0
    while [ -e "$canary" ] && [ "$waited" -lt "$confirm" ]; do
      sleep 1
      waited=$((waited + 1))
    done
    if [ -e "$canary" ]; then
      rm -f "$canary"
      roll_back
    fi
  ) </dev/null >/dev/null 2>&1 &
  say armed
  exit 0
fi
say activated
