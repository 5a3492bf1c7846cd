# The body of a nixdeploy sandbox host's switch-to-configuration (the build prepends
# `out`, `bb` and `behavior`). It records what it does under /run/nixdeploy-sandbox.
state=/run/nixdeploy-sandbox
mode="$1"
case "$mode" in
  switch|boot|test|dry-activate) ;;
  *)
    echo "usage: switch-to-configuration switch|boot|test|dry-activate" >&2
    exit 1
    ;;
esac

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
  echo "$out" > "$state/boot"
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
exit 0
