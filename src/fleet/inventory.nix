# Reads a flake's inventory for nixdeploy, without building anything, in one of two passes.
#
# The flake reference comes from NIXDEPLOY_FLAKE (so it is never spliced into Nix source).
# Values are passed through as raw, JSON-safe data; Rust validates them and names the
# host and field of every problem.
#
# NIXDEPLOY_HOSTS picks the pass:
# - unset or empty: the metadata pass. Every host, but no toplevel or profile path is touched:
#   each becomes a `deferred` marker. Cheap, whatever the configurations cost.
# - a JSON list of host names: the toplevel pass. Only those hosts, with their toplevels and
#   profile paths evaluated (instantiated, never built).
let
  inherit (builtins) attrNames fromJSON getEnv getFlake head isAttrs isFunction isList isPath isString listToAttrs mapAttrs;

  flake = getFlake (getEnv "NIXDEPLOY_FLAKE");

  hostsEnv = getEnv "NIXDEPLOY_HOSTS";
  metadataOnly = hostsEnv == "";
  wanted = if metadataOnly then { } else listToAttrs (map (name: { inherit name; value = null; }) (fromJSON hostsEnv));
  # The hosts of a set this pass reads: all of them, or only the wanted ones.
  pick = set: if metadataOnly then set else builtins.intersectAttrs wanted set;

  # With NIXDEPLOY_CATCH=1, a host whose entry throws (`throw`, `assert`) becomes a `failed`
  # marker instead of failing the whole evaluation; nixdeploy evaluates it again alone for
  # Nix's message. Other errors still stop the evaluation, and nixdeploy splits it up.
  catch = getEnv "NIXDEPLOY_CATCH" == "1";
  # In the toplevel pass each host's entry is also announced on stderr the moment it is
  # evaluated (a `trace` line, `@@nixdeploy-entry {"host":…,"entry":…}`), so nixdeploy can
  # start on a host while the others of its batch are still being evaluated.
  announce = name: entry:
    if metadataOnly then entry
    else builtins.trace ("@@nixdeploy-entry " + builtins.toJSON { host = name; inherit entry; }) entry;
  guard = f: name: v:
    let
      entry = f name v;
      tried = builtins.tryEval (builtins.deepSeq entry entry);
    in
    announce name (
      if !catch then entry
      else if tried.success then tried.value
      else { __nixdeploy = "failed"; });

  # What the metadata pass puts where a toplevel or profile path would be; `v` is never forced.
  deferred = { __nixdeploy = "deferred"; };
  # A toplevel or profile path: evaluated in the toplevel pass, never in the metadata pass.
  heavy = v: if metadataOnly then deferred else clean 0 v;

  # A NixOS configuration's system type, read without its toplevel (null when it cannot be).
  systemOf = cfg:
    let
      tried = builtins.tryEval (cfg.pkgs.stdenv.hostPlatform.system
        or cfg.config.nixpkgs.hostPlatform.system or cfg.config.nixpkgs.system or null);
    in
    if tried.success && isString tried.value then tried.value else null;

  # The toplevel of a NixOS configuration: deferred with its system type in the metadata pass.
  heavyOf = cfg: v: if metadataOnly then deferred // { system = systemOf cfg; } else clean 0 v;

  isDrv = v: isAttrs v && (v.type or null) == "derivation";

  # Where an error happened, for the trace that nixdeploy reads back.
  within = what: builtins.addErrorContext "nixdeploy-context: ${what}";

  # JSON-safe without building or copying: paths stay strings (secrets never enter the store),
  # derivations become their store paths, functions and too-deep values become markers.
  clean = depth: v:
    if isDrv v then {
      __nixdeploy = "derivation";
      # not `outPath`: toJSON would turn the whole set into that string
      drv = v.drvPath;
      out = v.outPath;
      system = v.system or null;
      wraps = wrappedBy v;
    }
    else if isPath v then toString v
    else if isFunction v then { __nixdeploy = "function"; }
    else if isAttrs v then
      (if depth > 0 then mapAttrs (_: clean (depth - 1)) v else { __nixdeploy = "set"; })
    else if isList v then
      (if depth > 0 then map (clean (depth - 1)) v else { __nixdeploy = "list"; })
    else v;

  # deploy-rs's `activate.*` wrappers are buildEnvs named `activatable-<base>` whose first
  # entry is the wrapped store path (the NixOS toplevel for `activate.nixos`); reading it lets
  # nixdeploy compare the system a host runs with the one it should run. Null otherwise.
  wrappedBy = v:
    let
      name = v.name or "";
      entries =
        if isString (v.pkgs or null) then builtins.fromJSON (builtins.unsafeDiscardStringContext v.pkgs)
        else null;
      first = if isList entries && entries != [ ] then head entries else null;
      paths = if isAttrs first then first.paths or null else null;
    in
    if builtins.substring 0 12 name == "activatable-" && isList paths && paths != [ ]
    then head paths
    else null;

  nixosConfigurations = flake.nixosConfigurations or { };

  # colmena: the evaluated hive (`colmena.lib.makeHive`); only its deployment settings, each
  # node's toplevel and the few `meta` fields nixdeploy reads are touched (meta.nixpkgs is a
  # whole package set).
  readHive = hive:
    if isAttrs hive then {
      nodes =
        if isAttrs (hive.nodes or null) then
          mapAttrs
            (guard (name: node: {
              deployment = within "colmenaHive.nodes.${name}.config.deployment"
                (clean 8 (node.config.deployment or null));
              toplevel = within "colmenaHive.nodes.${name}.config.system.build.toplevel"
                (heavyOf node (node.config.system.build.toplevel or null));
            }))
            (pick hive.nodes)
        else clean 0 (hive.nodes or null);
      meta = mapAttrs (key: v: within "colmenaHive.meta.${key}" (clean 2 v)) (
        builtins.intersectAttrs
          { allowApplyAll = null; machinesFile = null; name = null; description = null; }
          (hive.meta or { })
      );
    }
    else clean 0 hive;

  # What a flake defines, without the metadata getFlake adds (inputs, narHash, rev, ...).
  outputNames = attrNames (flake.outputs or flake);

  nixosToplevel = name:
    if isAttrs nixosConfigurations && nixosConfigurations ? ${name} then
      within "nixosConfigurations.${name}.config.system.build.toplevel"
        (heavyOf nixosConfigurations.${name} nixosConfigurations.${name}.config.system.build.toplevel)
    else null;

  readHost = name: host:
    if isAttrs host && !isDrv host then
      mapAttrs (field: v: within "host ${name}, field ${field}" (clean 8 v)) (removeAttrs host [ "toplevel" "profiles" ])
      // {
        toplevel =
          if host ? toplevel then within "host ${name}, field toplevel" (heavy host.toplevel)
          else nixosToplevel name;
      }
      // (
        if isAttrs (host.profiles or null) then {
          profiles = mapAttrs
            (p: v: within "host ${name}, profile ${p}" (
              if isAttrs v then clean 8 (removeAttrs v [ "path" ]) // (if v ? path then { path = heavy v.path; } else { })
              else clean 0 v))
            host.profiles;
        }
        else if host ? profiles then { profiles = within "host ${name}, field profiles" (clean 0 host.profiles); }
        else { }
      )
    else within "host ${name}" (clean 0 host);

  readNixdeploy = nd:
    if isAttrs nd then
      mapAttrs
        (key: v:
          if key == "hosts" && isAttrs v then mapAttrs (guard readHost) (pick v)
          else within "nixdeploy.${key}" (clean 8 v))
        nd
    else clean 0 nd;

  # deploy-rs: a node's system profile path is used as is; a node without one falls back
  # to its nixosConfigurations entry.
  readNode = name: node:
    if isAttrs node then
      within "deploy.nodes.${name}" (clean 8 (removeAttrs node [ "profiles" ]))
      // (if node ? profiles then { profiles = readProfiles name node.profiles; } else { })
      // {
        __nixosToplevel =
          # `?` rather than comparing with null, which would force the path in the metadata pass
          if metadataOnly && (node.profiles.system or { }) ? path then null
          else if (node.profiles.system.path or null) == null then nixosToplevel name
          else null;
      }
    else within "deploy.nodes.${name}" (clean 0 node);

  # A deploy-rs node's profiles: every setting, with `path` deferred in the metadata pass. A
  # profile other than the system one keeps its derivation's name there (which tells a
  # home-manager generation), read without instantiating it.
  readProfiles = name: profiles:
    if isAttrs profiles then
      mapAttrs
        (p: v: within "deploy.nodes.${name}.profiles.${p}" (
          if isAttrs v then
            clean 7 (removeAttrs v [ "path" ])
            // (if v ? path then { path = profilePath p v.path; } else { })
          else clean 0 v))
        profiles
    else within "deploy.nodes.${name}.profiles" (clean 0 profiles);

  profilePath = p: path:
    if !metadataOnly then heavy path
    else if p == "system" then deferred
    else
      let tried = builtins.tryEval (if isAttrs path then path.name or null else null);
      in deferred // { name = if tried.success && isString tried.value then tried.value else null; };

  readDeploy = d:
    if isAttrs d then
      mapAttrs
        (key: v:
          if key == "nodes" && isAttrs v then mapAttrs (guard readNode) (pick v)
          else within "deploy.${key}" (clean 8 v))
        d
    else clean 0 d;
in
{
  root = flake.outPath or null;
  # The flake's locked identity: a hash of every file Nix sees (dirty work trees included),
  # which keys nixdeploy's evaluation cache.
  narHash = flake.narHash or null;
  # The commit of a clean git flake (none for a dirty work tree or a `path:` flake), for the
  # journal's records.
  rev = flake.rev or null;
  # Runbook libraries can be imported from flake inputs (`import "flake:INPUT/MODULE"`).
  inputs = mapAttrs (_: i: i.outPath or null) (flake.inputs or { });
}
// (
  if flake ? nixdeploy then { source = "nixdeploy"; value = readNixdeploy flake.nixdeploy; }
  else if flake ? deploy then { source = "deploy"; value = readDeploy flake.deploy; }
  else if flake ? colmenaHive then { source = "colmenaHive"; value = readHive flake.colmenaHive; }
  else if flake ? colmena then { source = "colmena"; value = outputNames; }
  else if flake ? nixosConfigurations then {
    source = "nixosConfigurations";
    value =
      if isAttrs nixosConfigurations then mapAttrs (guard (name: _: { toplevel = nixosToplevel name; })) (pick nixosConfigurations)
      else clean 0 nixosConfigurations;
  }
  else { source = "none"; value = outputNames; }
)
