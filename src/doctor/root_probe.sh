# Facts for `nixdeploy doctor` that need root, one `key=value` per line. Changes nothing.
echo "root_uid=$(id -u)"
if [ -w /run ]; then echo run_writable=yes; else echo run_writable=no; fi
db=/nix/var/nix/db
[ -d "$db" ] || db=/nix/var/nix
[ -d "$db" ] || db=/nix
if [ -w "$db" ]; then echo store_writable=yes; else echo "store_writable=no:$db"; fi
