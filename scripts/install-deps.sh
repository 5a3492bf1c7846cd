#!/bin/sh
# Installs the Debian packages `nixdeploy sandbox` and the end-to-end tests need, and finishes
# the machine's Nix setup. Idempotent and non-interactive: runs `apt-get update` only when
# something is missing. Written for a fresh Debian 12 (no /nix, no /etc/nix, no nixbld group,
# no ~/.ssh, no sshd host keys): nothing here assumes an earlier run left anything behind.
set -eu

# nix-setup-systemd is Debian's Nix setup (nix.conf, the nixbld group and build users); it is
# only a Recommends of nix-bin, so --no-install-recommends would skip it. sudo is what the
# sandbox's non-root logins escalate with; procps gives the tests `ps`; openssl hashes the
# sandbox login's password.
packages="nix-bin nix-setup-systemd openssh-server openssh-client busybox-static iproute2 git tmux sudo procps openssl"

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $package" ;;
    esac
done

# The parts of the Nix setup that a package install does not make on a machine without
# systemd: the store's top directory (a root single-user Nix creates the rest itself).
finish_nix_setup() {
    if [ "$(id -u)" = 0 ]; then
        mkdir -p /nix /etc/nix
    fi
}

if [ -z "$missing" ]; then
    finish_nix_setup
    echo "install-deps: everything is installed ($packages)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing:$missing; run this script as root to install them" >&2
    exit 1
fi

# Package scripts must not start the machine's own sshd on port 22: sandbox hosts run their own
# sshd and never depend on the machine's. policy-rc.d exit 101 forbids service starts during
# the install; an existing policy is left alone.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=yes
fi
cleanup() {
    if [ -n "$made_policy" ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing$missing"
apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y --no-install-recommends $missing
finish_nix_setup
