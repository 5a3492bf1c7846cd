# Facts for `nixdeploy doctor`, one `key=value` per line, read as the ssh login. Changes nothing.
# TOOLS (the commands activation runs) is set in front of this script.
echo "user=$(id -un)"
echo "uid=$(id -u)"
echo "groups=$(id -Gn)"
echo "kernel=$(uname -s)"
echo "machine=$(uname -m)"
for tool in $TOOLS; do
    # bash's `command -v` also names files it cannot execute: check that it can.
    path=$(command -v "$tool" 2>/dev/null) && [ -x "$path" ] || path=
    echo "tool.$tool=$path"
done
df -Pk /nix 2>/dev/null | { read -r _; read -r _ _ _ avail _; echo "nix_free_kib=$avail"; }
echo "trusted_users=$(nix --extra-experimental-features nix-command show-config 2>/dev/null | sed -n 's/^trusted-users = //p')"
