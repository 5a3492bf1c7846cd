#!/usr/bin/env bash
# The main job on a local sandbox fleet: install what is missing, build nixdeploy, bring up
# sandbox hosts (network namespaces running sshd, each with its own Nix store) and deploy to them
# with runbooks/canary.rhai. Run as root on Debian 12. `nixdeploy sandbox down` removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
bin=target/release/nixdeploy
dir=${NIXDEPLOY_DEMO_DIR:-/tmp/nixdeploy-demo}
hosts=${NIXDEPLOY_DEMO_HOSTS:-8}
"$bin" sandbox up --hosts "$hosts" --dir "$dir"
flake=$("$bin" sandbox status --dir "$dir" --json | sed -n 's/.*"flake": *"\([^"]*\)".*/\1/p')
"$bin" hosts --flake "$flake"
# The sandbox hosts serve /health on port 8080, so the canary's opt-in HTTP check is switched on.
"$bin" run canary --flake "$flake" --yes --set health=http://127.0.0.1:8080/health
echo
echo "Deployed. Look around:  $bin hosts --flake $flake"
echo "                        $bin repl --flake $flake"
echo "Tear down:              $bin sandbox down --dir $dir"
