#!/usr/bin/env bash
# Benchmark (not a test): nixdeploy against the shell loops a user would write instead, and the
# floor, on sandbox fleets of 1, 8 and 32 hosts. Prints a Markdown table; docs/performance.md
# records a run. Usage, as root: bash scripts/bench.sh [SIZES_KIB] [HOST_COUNTS]
#   e.g. bash scripts/bench.sh "1024 51200" "1 8 32"
# Binary cache mode (docs/performance.md, "Through a binary cache"): direct copy against
# `via=cache`, bytes leaving the deployer and wall time, with and without a 100 Mbit/s uplink:
#   bash scripts/bench.sh cache [HOSTS=32] [KIB=51200]
# NIXDEPLOY_BIN=path uses that binary instead of building a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-"1024 51200"}
counts=${2:-"1 8 32"}
if [ -n "${NIXDEPLOY_BIN:-}" ]; then
    bin=$NIXDEPLOY_BIN
else
    cargo build --release --quiet
    bin=$PWD/target/release/nixdeploy
fi
nixf=(--extra-experimental-features "nix-command flakes" --option substituters "")
export NIX_CONFIG="substituters ="
root=$(mktemp -d /tmp/nd-bench.XXXX)
trap '"$bin" sandbox down --dir "$root/sb" >/dev/null 2>&1 || true; rm -rf "$root"' EXIT

# timed LABEL CMD...: wall seconds (and, for nixdeploy, peak RSS in MiB) into $root/last.
# Each contender starts after a sync, so none pays the disk writeback of the one before it.
timed() {
    sync
    python3 - "$@" <<'PY' > "$root/last"
import resource, subprocess, sys, time
t = time.time()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.time() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{wall:.2f} {rss:.0f} {rc}")
PY
    cat "$root/last"
}

fresh() { # fresh N KIB REV: a new sandbox whose hosts all have revision REV, systems prebuilt
    "$bin" sandbox down --dir "$root/sb" >/dev/null 2>&1 || true
    "$bin" sandbox up --hosts "$1" --size-kib "$2" --dir "$root/sb" >/dev/null
    set_rev "$3"
}

set_rev() { # every host gets revision $1; builds (untimed) so all contenders start from built systems
    python3 - "$root/sb/flake/fleet.json" "$1" <<'PY'
import json, sys
p, rev = sys.argv[1], int(sys.argv[2])
f = json.load(open(p))
for h in f["hosts"].values():
    h["rev"] = rev
json.dump(f, open(p, "w"), indent=2)
PY
    local attrs=()
    for h in $(hostnames); do attrs+=("path:$root/sb/flake#nixosConfigurations.$h.config.system.build.toplevel"); done
    nix "${nixf[@]}" build --no-link "${attrs[@]}"
    # Start every contender with the new systems on disk, not with their writeback still pending.
    sync
}

hostnames() { python3 -c "import json;print(' '.join(json.load(open('$root/sb/flake/fleet.json'))['hosts']))"; }

loop_one() { # the per-host shell loop body: nix build, nix copy, ssh switch
    local h=$1 flake=path:$root/sb/flake cfg=$root/sb/ssh_config p
    local nixf=(--extra-experimental-features "nix-command flakes" --option substituters "")
    p=$(nix "${nixf[@]}" build --no-link --json "$flake#nixosConfigurations.$h.config.system.build.toplevel" \
        | sed 's/.*"out":"\([^"]*\)".*/\1/')
    NIX_SSHOPTS="-F $cfg" nix "${nixf[@]}" copy --no-check-sigs --to "ssh-ng://root@$h" "$p"
    ssh -F "$cfg" "$h" "nix-env -p /nix/var/nix/profiles/system --set $p && $p/bin/switch-to-configuration switch"
}
seq_loop() { for h in $(hostnames); do loop_one "$h"; done; }
par_loop() { hostnames | tr ' ' '\n' | xargs -P 32 -I{} bash -c 'loop_one "$0"' {}; }
export root
export -f loop_one seq_loop par_loop hostnames

# --- scale mode: large fleets and evaluation-heavy configurations (docs/performance.md,
# "Large fleets"). bash scripts/bench.sh scale [HOST_COUNTS="32 64 128 256"] [KIB=1024]
# Rows go to stdout as they finish (and to $SCALE_OUT if set), so a run cut short keeps them.
# nixdeploy's own peak RSS (VmHWM of its process) is apart from the Nix processes it starts.
scale_timed() { # scale_timed CMD...: "wall own_rss_mib children_rss_mib rc"
    sync
    python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
t = time.time()
log = open(os.environ.get("SCALE_LOG", "/dev/null"), "w")
p = subprocess.Popen(sys.argv[1:], stdout=log, stderr=subprocess.STDOUT)
hwm = 0
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmHWM:"):
                hwm = max(hwm, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.02)
wall = time.time() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{wall:.2f} {hwm / 1024:.0f} {kids:.0f} {p.returncode}")
PY
}
scale_nd() { # scale_nd [ARGS...]: apply with the scale settings
    scale_timed "$bin" run "${SCALE_BOOK:-runbooks/apply.rhai}" --flake "path:$root/sb/flake" --parallel 32 "$@"
}
# The loop's guarantees: no settle window, no magic rollback (it confirms nothing).
scale_bare() {
    printf '%s\n' 'let r = deploy(hosts(), #{ settle: 0, magic_rollback: false });' \
        'if !r.ok { throw `failed: ${r.failed}`; }' > "$root/bare.rhai"
    SCALE_BOOK="$root/bare.rhai" scale_nd "$@"
}
scale_work() { # scale_work N: every host's evaluation costs N list elements (0: cheap)
    python3 - "$root/sb/flake/fleet.json" "$1" <<'PY'
import json, sys
p, n = sys.argv[1], int(sys.argv[2])
f = json.load(open(p))
f["evalWork"] = n
json.dump(f, open(p, "w"), indent=2)
PY
}
scale_prebuild() { # builds the toplevels (untimed; of $SCALE_ON, or all) with a throwaway cache
    NIXDEPLOY_STATE_DIR="$root/prebuild-state" "$bin" build --flake "path:$root/sb/flake" \
        --parallel 32 --no-persist ${SCALE_ON:+--on "$SCALE_ON"} >/dev/null 2>&1
    sync
}
scale_fresh() { # scale_fresh N KIB WORK REV: new sandbox, evaluation cost WORK, systems built
    "$bin" disconnect >/dev/null 2>&1 || true
    "$bin" sandbox down --dir "$root/sb" >/dev/null 2>&1 || true
    rm -rf "$NIXDEPLOY_STATE_DIR"
    "$bin" sandbox up --hosts "$1" --size-kib "$2" --dir "$root/sb" >/dev/null
    scale_work "$3"
    scale_rev "$4"
}
scale_rev() { # every host gets revision $1, built untimed
    python3 - "$root/sb/flake/fleet.json" "$1" <<'PY'
import json, sys
p, rev = sys.argv[1], int(sys.argv[2])
f = json.load(open(p))
for h in f["hosts"].values():
    h["rev"] = rev
json.dump(f, open(p, "w"), indent=2)
PY
    scale_prebuild
}
scale_row() { echo "$*" | tee -a "${SCALE_OUT:-/dev/null}"; }
scale_check() { # scale_check RC WHAT: a failed run is reported with its failed hosts
    [ "$1" = 0 ] && return 0
    { echo "  ^ $2: exit code $1; failed hosts:"
      grep -E '^[^ ]+ +(failed|rolled back) ' "$root/run.log" | head -5 | sed 's/^/    /'
    } | tee -a "${SCALE_OUT:-/dev/null}"
}
scale_size() { # scale_size N KIB WORK LABEL: every scenario of one fleet size and fixture
    local n=$1 kib=$2 work=$3 label=$4 r1=$RANDOM$RANDOM r2=$RANDOM$RANDOM
    local w o k rc first change cold warm par_first par_change par_noop floor
    scale_fresh "$n" "$kib" "$work" "$r1"
    read -r w o k rc < <(scale_nd --no-persist); first="$w|$o|$k"; scale_check "$rc" "$n hosts, ${label:-heavy}, first"
    "$bin" disconnect >/dev/null 2>&1 || true
    read -r w o k rc < <(scale_nd --no-persist); cold="$w|$o|$k"; scale_check "$rc" "$n hosts, ${label:-heavy}, cold"
    read -r w _ _ rc < <(scale_nd); scale_check "$rc" "$n hosts, ${label:-heavy}, warm-up"         # leaves masters warm
    read -r w o k rc < <(scale_nd); warm="$w|$o|$k"; scale_check "$rc" "$n hosts, ${label:-heavy}, warm"
    "$bin" disconnect >/dev/null 2>&1 || true
    scale_rev "$r2"
    read -r w o k rc < <(scale_nd --no-persist); change="$w|$o|$k"; scale_check "$rc" "$n hosts, ${label:-heavy}, change"
    read -r floor _ _ _ < <(floor_noop)
    local bare=""
    if [ "$n" -le "${SCALE_HEAVY_LOOP:-256}" ]; then
        scale_rev "$RANDOM$RANDOM"
        read -r w o k rc < <(scale_bare --no-persist); bare="$w|$o|$k"; scale_check "$rc" "$n hosts, ${label:-heavy}, change without safety net"
    fi

    scale_row "| $n | $label | first deploy | ${first//|/ | } | | |"
    scale_row "| $n | $label | change (every host) | ${change//|/ | } | | |"
    [ -z "$bare" ] || scale_row "| $n | $label | change, the loop's guarantees (\`settle: 0, magic_rollback: false\`) | ${bare//|/ | } | | |"
    scale_row "| $n | $label | no-op, cold connections | ${cold//|/ | } | | $floor |"
    scale_row "| $n | $label | no-op, warm connections | ${warm//|/ | } | | |"
    # The parallel loop on the evaluation-heavy fixture is slow: only up to SCALE_HEAVY_LOOP hosts.
    [ "$work" = 0 ] || [ "$n" -le "${SCALE_HEAVY_LOOP:-256}" ] || return 0

    scale_fresh "$n" "$kib" "$work" "$r1"
    read -r par_first _ _ rc < <(scale_timed bash -c par_loop); scale_check "$rc" "$n hosts, ${label:-heavy}, parallel loop first"
    read -r par_noop _ _ rc < <(scale_timed bash -c par_loop); scale_check "$rc" "$n hosts, ${label:-heavy}, parallel loop no-op"
    scale_rev "$r2"
    read -r par_change _ _ rc < <(scale_timed bash -c par_loop); scale_check "$rc" "$n hosts, ${label:-heavy}, parallel loop change"
    scale_row "| $n | $label | parallel loop: first, change, no-op | | | | $par_first, $par_change, $par_noop | |"
}
scale_on_one() { # scale_on_one N WORK: `--on h1` on an N-host evaluation-heavy flake
    local n=$1 work=$2
    SCALE_ON=h1 scale_fresh "$n" 64 "$work" "$RANDOM$RANDOM"
    read -r w o k rc < <(scale_nd --no-persist --on h1); scale_check "$rc" "$n hosts, ${label:-heavy}, --on h1"
    scale_row "| $n | heavy | --on h1 (first deploy of h1) | $w | $o | $k | | |"
}

nd() { timed "$bin" run runbooks/apply.rhai --flake "path:$root/sb/flake" --parallel 32; }

floor_noop() {
    local attrs="" hs
    hs=$(hostnames)
    timed bash -c "nix --extra-experimental-features 'nix-command flakes' eval --json --impure --expr \
      'let f = builtins.getFlake \"path:$root/sb/flake\"; in builtins.mapAttrs (n: c: c.config.system.build.toplevel.drvPath) f.nixosConfigurations' >/dev/null \
      && for h in $hs; do ssh -F $root/sb/ssh_config \$h true & done; wait"
}

# scale mode runs here, once everything it uses (floor_noop) is defined.
if [ "${1:-}" = scale ]; then
    counts=${2:-"32 64 128 256"}
    kib=${3:-1024}
    heavy=${SCALE_WORK:-900000}
    export NIXDEPLOY_STATE_DIR="$root/state" SCALE_LOG="$root/run.log"
    scale_row "| hosts | fixture | scenario | nixdeploy (s) | nixdeploy RSS (MiB) | Nix peak RSS (MiB) | parallel loop (s) | floor (s) |"
    scale_row "|---:|---|---|---:|---:|---:|---:|---:|"
    for n in $counts; do
        scale_size "$n" "$kib" 0 "cheap, $((kib / 1024)) MiB"
        [ "${SCALE_FIXTURES:-both}" = cheap ] || scale_size "$n" "$kib" "$heavy" "heavy, $((kib / 1024)) MiB"
    done
    scale_on_one 1 "$heavy"
    scale_on_one "${counts##* }" "$heavy"
    exit 0
fi

floor_copy() {
    local hs
    hs=$(hostnames)
    local cmds=""
    for h in $hs; do
        p=$(nix "${nixf[@]}" build --no-link --json "path:$root/sb/flake#nixosConfigurations.$h.config.system.build.toplevel" | sed 's/.*"out":"\([^"]*\)".*/\1/')
        cmds+="NIX_SSHOPTS='-F $root/sb/ssh_config' nix --extra-experimental-features nix-command copy --no-check-sigs --to ssh-ng://root@$h $p & "
    done
    timed bash -c "${cmds} wait"
}

# --- binary cache mode ----------------------------------------------------------------------
# The model: the deployer's uplink is the sandbox bridge device itself. Everything the deployer
# sends to a host leaves through it (its tx counter counts it; a tbf qdisc on it shapes it).
# The cache host's traffic to the hosts is forwarded port to port inside the bridge and never
# crosses the deployer's uplink: the cache sits next to the fleet. The push goes to a file://
# directory, so it crosses no link here; its bytes (the NARs written) are counted separately and,
# for the limited uplink, its time at 100 Mbit/s is added as "push over the uplink".
bridge() { python3 -c "import json;print(json.load(open('$root/sb/state.json'))['bridge'])"; }
tx() { cat "/sys/class/net/$(bridge)/statistics/tx_bytes"; }
shape() { # shape RATE|off
    tc qdisc del dev "$(bridge)" root 2>/dev/null || true
    if [ "$1" != off ]; then tc qdisc add dev "$(bridge)" root tbf rate "$1" burst 256kb latency 400ms; fi
}
fresh_cache() { # fresh_cache N KIB REV: a new sandbox with a cache host; closures all shared but 64 KiB
    "$bin" sandbox down --dir "$root/sb" >/dev/null 2>&1 || true
    "$bin" sandbox up --hosts "$1" --size-kib "$2" --cache --dir "$root/sb" >/dev/null
    python3 - "$root/sb/flake/fleet.json" "$2" <<'PY'
import json, sys
p, kib = sys.argv[1], int(sys.argv[2])
f = json.load(open(p))
f["sharedKiB"] = kib
for h in f["hosts"].values():
    h["uniqueKiB"] = 64
json.dump(f, open(p, "w"), indent=2)
PY
    set_rev "$3"
}
cache_run() { # cache_run N KIB VIA RATE: one first deploy; prints "wall egress_bytes pushed_bytes"
    fresh_cache "$1" "$2" "$RANDOM$RANDOM"
    shape "$4"
    local before after pushed
    before=$(tx)
    read -r wall _ rc < <(timed "$bin" run runbooks/apply.rhai --flake "path:$root/sb/flake" \
        --parallel 32 --set "via=$3")
    after=$(tx)
    shape off
    [ "$rc" = 0 ] || { echo "deploy via $3 failed" >&2; exit 1; }
    pushed=$(du -sb "$root/sb/cache" | cut -f1)
    [ "$3" = cache ] || pushed=0
    echo "$wall $((after - before)) $pushed"
}
if [ "${1:-}" = cache ]; then
    n=${2:-32}; kib=${3:-51200}
    mib() { python3 -c "print(f'{$1/1048576:.1f}')"; }
    echo "| hosts | uplink | via | wall (s) | bytes to hosts over the uplink (MiB) | pushed to the cache (MiB) | egress / one closure | push over the uplink (s, computed) |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|"
    one=$(( (kib + 64) * 1024 + 2 * 1048576 ))   # a closure: shared + unique + busybox (about 2 MiB)
    for rate in off 100mbit; do
        for via in direct cache; do
            for hosts in 1 "$n"; do
                read -r wall egress pushed < <(cache_run "$hosts" "$kib" "$via" "$rate")
                ratio=$(python3 -c "print(f'{($egress + $pushed) / $one:.2f}')")
                push_s=$(python3 -c "print(f'{$pushed * 8 / 100e6:.1f}' if '$rate' != 'off' and $pushed else '')")
                label=$([ "$rate" = off ] && echo "unlimited" || echo "100 Mbit/s")
                echo "| $hosts | $label | $via | $wall | $(mib "$egress") | $(mib "$pushed") | $ratio | $push_s |"
            done
        done
    done
    exit 0
fi

echo "| hosts | closure | scenario | nixdeploy (s) | peak RSS (MiB) | sequential loop (s) | parallel loop (s) | floor (s) |"
echo "|---:|---:|---|---:|---:|---:|---:|---:|"
for kib in $sizes; do
  for n in $counts; do
    r1=$RANDOM$RANDOM; r2=$RANDOM$RANDOM
    fresh "$n" "$kib" "$r1"
    read -r nd_first rss_first _ < <(nd)
    read -r nd_noop rss_noop _ < <(nd)
    set_rev "$r2"
    read -r nd_change rss_change _ < <(nd)
    read -r fl_noop _ _ < <(floor_noop)

    fresh "$n" "$kib" "$r1"
    read -r fl_copy _ _ < <(floor_copy)

    fresh "$n" "$kib" "$r1"
    read -r par_first _ _ < <(timed bash -c par_loop)
    read -r par_noop _ _ < <(timed bash -c par_loop)
    set_rev "$r2"
    read -r par_change _ _ < <(timed bash -c par_loop)

    fresh "$n" "$kib" "$r1"
    read -r seq_first _ _ < <(timed bash -c seq_loop)
    read -r seq_noop _ _ < <(timed bash -c seq_loop)
    set_rev "$r2"
    read -r seq_change _ _ < <(timed bash -c seq_loop)

    echo "| $n | $((kib / 1024)) MiB | first deploy | $nd_first | $rss_first | $seq_first | $par_first | $fl_copy (raw parallel copy) |"
    echo "| $n | $((kib / 1024)) MiB | change (one unique path per host) | $nd_change | $rss_change | $seq_change | $par_change | |"
    echo "| $n | $((kib / 1024)) MiB | no-op redeploy | $nd_noop | $rss_noop | $seq_noop | $par_noop | $fl_noop (eval + ssh true) |"
  done
done
