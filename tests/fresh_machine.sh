#!/bin/sh
# Runs nixdeploy as on a fresh Debian 12 machine, without changing this one: in a private mount
# namespace, the root file system is seen through an overlay whose upper layer lives in memory,
# and everything a fresh machine lacks is removed from that view only: /nix, /etc/nix, the nixbld
# and nix-users groups and users, ~/.ssh and the sshd host keys. The packages stay installed
# (scripts/install-deps.sh installs them), so this checks what nixdeploy itself must create.
#
# Usage (as root): unshare --mount --propagation private sh fresh_machine.sh WORK BIN REPO
#   WORK  an empty directory for the layers and for what the run leaves behind (WORK/out)
#   BIN   the nixdeploy binary; REPO  the repository (for runbooks/)
set -eu
work=$1 bin=$2 repo=$3

mkdir -p "$work/layer" "$work/out"
mount -t tmpfs nixdeploy-fresh "$work/layer"
upper=$work/layer/upper
mkdir "$upper" "$work/layer/work" "$work/layer/root"
root=$work/layer/root

# What a fresh machine does not have, hidden by whiteouts (character devices 0/0) in the upper
# layer, made before the overlay is mounted: unlike deleting through the overlay, this cannot
# race with other processes adding paths to this machine's /nix/store meanwhile.
hide() {
    mkdir -p "$upper$(dirname "$1")"
    mknod "$upper$1" c 0 0
}
hide /nix
hide /etc/nix
hide /root/.ssh
for key in /etc/ssh/ssh_host_*; do
    [ -e "$key" ] && hide "$key"
done
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work/layer/work" "$root"

for db in passwd group shadow gshadow; do
    [ -f "$root/etc/$db" ] && sed -i '/^nixbld/d;/^nix-users:/d' "$root/etc/$db"
done

for dir in proc sys dev run; do
    mount --rbind "/$dir" "$root/$dir"
done
mount --bind "$work/out" "$root$work/out"

# pivot_root rather than chroot: Nix's build sandbox makes user namespaces, which the kernel
# refuses to a chrooted process.
mkdir -p "$root/.old-root"
cd "$root"
pivot_root . .old-root
exec chroot . env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    NIXDEPLOY_STATE_DIR="$work/out/state" sh -ec '
umount -l /.old-root
rmdir /.old-root
work=$1 bin=$2 repo=$3
# The view really is fresh.
test ! -e /nix && test ! -e /etc/nix && test ! -e /root/.ssh
! getent group nixbld >/dev/null
! ls /etc/ssh/ssh_host_* >/dev/null 2>&1
echo "fresh: no /nix, no /etc/nix, no nixbld group, no ~/.ssh, no sshd host keys"

"$bin" sandbox up --hosts 2 --dir "$work/out/sandbox"
status=0
"$bin" run "$repo/runbooks/apply.rhai" --flake "path:$work/out/sandbox/flake" --yes || status=$?
# What the hosts really run, read from their own /run.
for host in h1 h2; do
    echo "$host runs $(readlink "$work/out/sandbox/hosts/$host/run/current-system")"
done
"$bin" sandbox down --dir "$work/out/sandbox"
exit "$status"
' fresh "$work" "$bin" "$repo"
