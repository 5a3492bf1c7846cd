# The body of a nixdeploy sandbox host's switch-to-configuration (the build prepends
# `out`, `bb`, `behavior` and `block_secs`). It records what it does under
# /run/nixdeploy-sandbox; the boot default survives reboots in /nix/var/nixdeploy-sandbox/boot.
state=/run/nixdeploy-sandbox
persistent=/nix/var/nixdeploy-sandbox
mode="$1"
case "$mode" in
  switch|boot|test|dry-activate|check) ;;
  *)
    echo "usage: switch-to-configuration switch|boot|test|dry-activate|check" >&2
    exit 1
    ;;
esac

# Pre-switch checks, as NixOS runs them before `switch`, `test` and `check` (never `boot`).
if [ "$behavior" = inhibited ] && [ "$mode" != boot ] && [ "$mode" != dry-activate ]; then
  echo "Checking switch inhibitors..."
  echo "There are changes to critical components of the system:"
  echo "  systemd"
  echo "Switching into this system is not recommended: make it the boot default and reboot."
  echo "Pre-switch check 'switchInhibitors' failed"
  echo "Pre-switch checks failed"
  exit 1
fi
if [ "$mode" = check ]; then
  echo "pre-switch checks passed"
  exit 0
fi

current=$("$bb" readlink /run/current-system 2>/dev/null || true)
if [ "$mode" = dry-activate ]; then
  echo "would activate $out (behavior $behavior)"
  echo "current system: ${current:-none}"
  exit 0
fi

"$bb" mkdir -p "$state"
echo "$mode $out" >> "$state/activations"

if [ "$behavior" = fail-activation ]; then
  echo "switch-to-configuration: activating $out failed (sandbox behavior fail-activation)" >&2
  exit 2
fi

# `switch` and `boot` make this the boot default; `test` leaves it alone.
if [ "$mode" != test ]; then
  "$bb" mkdir -p "$persistent"
  echo "$out" > "$persistent/boot.tmp" && "$bb" mv -f "$persistent/boot.tmp" "$persistent/boot"
fi
if [ "$mode" = boot ]; then
  echo "$out will be activated on the next boot"
  exit 0
fi

"$bb" ln -sfn "$out" /run/current-system
"$bb" ip link set eth0 up
if [ "$behavior" = unhealthy ]; then
  echo unhealthy > "$state/health"
else
  echo healthy > "$state/health"
fi

# Restart the health server: stop the previous one (by its pid file, if it still is httpd).
if [ -f "$state/httpd.pid" ]; then
  old=$("$bb" cat "$state/httpd.pid")
  if [ -n "$old" ] && "$bb" grep -q httpd "/proc/$old/cmdline" 2>/dev/null; then
    "$bb" kill "$old" 2>/dev/null || true
    tries=0
    while [ -r "/proc/$old/cmdline" ] && [ -n "$("$bb" cat "/proc/$old/cmdline" 2>/dev/null)" ] && [ "$tries" -lt 200 ]; do
      "$bb" usleep 10000
      tries=$((tries + 1))
    done
  fi
fi
"$bb" setsid "$bb" httpd -f -p 8080 -h "$out/www" </dev/null >/dev/null 2>&1 &
echo $! > "$state/httpd.pid"
echo "activated $out ($mode)"

if [ "$behavior" = cut-network ]; then
  echo "cutting the network (sandbox behavior cut-network)"
  "$bb" ip link set eth0 down
fi
if [ "$behavior" = cut-network-late ]; then
  # Like a networkd or firewall reload that finishes a moment after activation returns.
  echo "the network goes away in 0.5 s (sandbox behavior cut-network-late)"
  "$bb" setsid "$bb" sh -c "\"$bb\" usleep 500000; \"$bb\" ip link set eth0 down" </dev/null >/dev/null 2>&1 &
fi
if [ "$behavior" = block-ssh ]; then
  echo "blocking ssh for $block_secs s (sandbox behavior block-ssh)"
  "$bb" ip link set eth0 down
  "$bb" setsid "$bb" sh -c "\"$bb\" sleep $block_secs; \"$bb\" ip link set eth0 up" </dev/null >/dev/null 2>&1 &
fi
exit 0
