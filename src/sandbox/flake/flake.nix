# Written by `nixdeploy sandbox up`. Everything it builds is driven by ./fleet.json
# (schema in nixdeploy's docs/sandbox.md); edit that file, not this one.
{
  description = "nixdeploy sandbox fleet";

  outputs = { self }:
    let
      fleet = builtins.fromJSON (builtins.readFile ./fleet.json);
      busybox = "${./bb}/bin/busybox";
      behaviors = [ "ok" "fail-activation" "cut-network" "cut-network-late" "block-ssh" "inhibited" "unhealthy" ];
      globalNames = builtins.attrNames fleet.packages;
      perPackageKiB =
        if globalNames == [ ] then 0 else fleet.sharedKiB / builtins.length globalNames;

      # A derivation whose builder is busybox sh; the script finds busybox in "$bb".
      mk = name: system: script: env:
        derivation ({
          inherit name system;
          builder = busybox;
          args = [ "sh" "-ec" ("bb=\"$builder\"\n" + script) ];
        } // env);

      # One package shared by every host of a system that uses this version.
      package = system: pname: version:
        mk "${pname}-${version}" system ''
          "$bb" mkdir -p "$out"
          "$bb" head -c "$bytes" /dev/urandom > "$out/$dataFile"
          if [ "$pname" = linux ]; then
            printf 'initrd of linux-%s\n' "$version" > "$out/initrd"
          fi
        '' {
          inherit pname version;
          bytes = toString (perPackageKiB * 1024);
          dataFile = if pname == "linux" then "bzImage" else "data";
        };

      # The one store path only this host (at this rev) has.
      hostData = name: h: system:
        mk "host-data-${name}-${toString (h.rev or 1)}" system ''
          "$bb" head -c "$bytes" /dev/urandom > "$out"
        '' { bytes = toString ((h.uniqueKiB or 0) * 1024); };

      # A host's toplevel, with `specialisation/<s>` links to one more toplevel per entry of
      # its `specialisations` (fleet.json), as NixOS builds them.
      # `evalError` makes evaluating the host's toplevel throw (its metadata still reads).
      toplevel = name: h:
        if h ? evalError then throw "sandbox host ${name}: ${h.evalError}"
        else
          systemOf name h
            (builtins.mapAttrs (s: _: systemOf "${name}-${s}" h { }) (h.specialisations or { }));

      # `evalWork` (per host, or for every host at the top of fleet.json): a list of that many
      # numbers built and summed while the toplevel is evaluated, so each host costs evaluation
      # time and memory as a real NixOS configuration does (900000: about 0.3 s and 200 MiB).
      # `evalGate` (a path, usually a FIFO): evaluating the toplevel reads it, so the host's
      # evaluation waits until a test writes the gate; the metadata pass never reads it.
      weight = h:
        let n = h.evalWork or fleet.evalWork or 0; in
        (if n > 0 then { weight = toString (builtins.foldl' (a: x: a + x) 0 (builtins.genList (i: i) n)); }
        else { })
        // (if h ? evalGate then { gate = builtins.readFile h.evalGate; } else { });

      systemOf = name: h: specialisations:
        let
          system = h.system or "x86_64-linux";
          rev = toString (h.rev or 1);
          behavior = h.behavior or "ok";
          pkgs = builtins.mapAttrs (package system) (fleet.packages // (h.packages or { }));
        in
        assert builtins.elem behavior behaviors
          || throw "sandbox host ${name}: behavior must be one of ${builtins.concatStringsSep ", " behaviors}, not ${behavior}";
        mk "nixos-system-${name}-${rev}" system ''
          "$bb" mkdir -p "$out/bin" "$out/sw" "$out/www"
          for p in $packages; do
            "$bb" ln -s "$p" "$out/sw/''${p#*-}"
          done
          if [ -n "$linux" ]; then
            "$bb" ln -s "$linux/bzImage" "$out/kernel"
            "$bb" ln -s "$linux/initrd" "$out/initrd"
          else
            echo "no kernel" > "$out/kernel"
            echo "no initrd" > "$out/initrd"
          fi
          "$bb" ln -s "$hostData" "$out/host-data"
          printf '%s\n' "$nixosVersion" > "$out/nixos-version"
          printf '%s\n' "$system" > "$out/system"
          printf '#!%s sh\necho "nixdeploy sandbox: init of %s"\n' "$bb" "$hostName" > "$out/init"
          for link in $specialisations; do
            "$bb" mkdir -p "$out/specialisation"
            "$bb" ln -s "''${link#*=}" "$out/specialisation/''${link%%=*}"
          done
          if [ "$behavior" != unhealthy ]; then
            echo ok > "$out/www/health"
          fi
          if [ "$behavior" = inhibited ]; then
            # Like NixOS's switch inhibitors: a changed entry refuses a live switch.
            printf '{"systemd":"%s"}\n' "$out" > "$out/switch-inhibitors"
          fi
          {
            printf '#!%s sh\n' "$bb"
            printf 'out=%s\nbb=%s\nbehavior=%s\nblock_secs=%s\n' "$out" "$bb" "$behavior" "$blockSshSecs"
            printf '%s\n' "$switchBody"
          } > "$out/bin/switch-to-configuration"
          "$bb" chmod 555 "$out/init" "$out/bin/switch-to-configuration"
        '' ({
          inherit behavior;
          blockSshSecs = toString (h.blockSshSecs or 10);
          hostName = name;
          packages = builtins.attrValues pkgs;
          linux = pkgs.linux or "";
          hostData = hostData name h system;
          nixosVersion = "sandbox-${rev}";
          switchBody = builtins.readFile ./switch-to-configuration.sh;
          specialisations = builtins.concatStringsSep " "
            (builtins.attrValues (builtins.mapAttrs (s: d: "${s}=${d}") specialisations));
        } // weight h);
    in
    {
      nixosConfigurations = builtins.mapAttrs
        (name: h: { config.system.build.toplevel = toplevel name h; })
        fleet.hosts;

      nixdeploy = {
        sshConfig = fleet.sshConfig;
        # No binary cache is reachable from a sandbox: do not wait for one.
        nixOptions = { substituters = ""; };
        # `defaults` and each host's `inventory` in fleet.json add inventory fields
        # (targetUser, privilegeEscalation, signingKey, ...); `sandbox up --cache` adds the
        # sandbox's binary cache (push, url, publicKey, signingKeyFile).
        defaults = { targetUser = "root"; } // (fleet.defaults or { })
          // (if fleet ? cache then { inherit (fleet) cache; } else { });
        hosts = builtins.mapAttrs
          (name: h: {
            tags = h.tags or [ ];
            system = h.system or "x86_64-linux";
            buildOn = h.buildOn or "local";
            keys = h.keys or { };
          } // (h.inventory or { }))
          fleet.hosts;
        builders = builtins.mapAttrs
          (name: b: {
            host = name;
            systems = b.systems or [ "aarch64-linux" ];
            maxJobs = b.maxJobs or 1;
            speedFactor = b.speedFactor or 1;
          })
          (fleet.builders or { });
      };
    };
}
