# Reads a flake's inventory for nixdeploy in one evaluation, without building anything.
#
# The flake reference comes from NIXDEPLOY_FLAKE (so it is never spliced into Nix source).
# Values are passed through as raw, JSON-safe data; Rust validates them and names the
# host and field of every problem. Only the toplevels that are needed are evaluated.
let
  inherit (builtins) attrNames getEnv getFlake head isAttrs isFunction isList isPath isString mapAttrs;

  flake = getFlake (getEnv "NIXDEPLOY_FLAKE");

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
            (name: node: {
              deployment = within "colmenaHive.nodes.${name}.config.deployment"
                (clean 8 (node.config.deployment or null));
              toplevel = within "colmenaHive.nodes.${name}.config.system.build.toplevel"
                (clean 0 (node.config.system.build.toplevel or null));
            })
            hive.nodes
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
        (clean 0 nixosConfigurations.${name}.config.system.build.toplevel)
    else null;

  readHost = name: host:
    if isAttrs host && !isDrv host then
      mapAttrs (field: v: within "host ${name}, field ${field}" (clean 8 v)) (removeAttrs host [ "toplevel" ])
      // {
        toplevel =
          if host ? toplevel then within "host ${name}, field toplevel" (clean 0 host.toplevel)
          else nixosToplevel name;
      }
    else within "host ${name}" (clean 0 host);

  readNixdeploy = nd:
    if isAttrs nd then
      mapAttrs
        (key: v:
          if key == "hosts" && isAttrs v then mapAttrs readHost v
          else within "nixdeploy.${key}" (clean 8 v))
        nd
    else clean 0 nd;

  # deploy-rs: a node's system profile path is used as is; a node without one falls back
  # to its nixosConfigurations entry.
  readNode = name: node:
    if isAttrs node then
      within "deploy.nodes.${name}" (clean 8 node)
      // {
        __nixosToplevel =
          if (node.profiles.system.path or null) == null then nixosToplevel name else null;
      }
    else within "deploy.nodes.${name}" (clean 0 node);

  readDeploy = d:
    if isAttrs d then
      mapAttrs
        (key: v:
          if key == "nodes" && isAttrs v then mapAttrs readNode v
          else within "deploy.${key}" (clean 8 v))
        d
    else clean 0 d;
in
{
  root = flake.outPath or null;
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
      if isAttrs nixosConfigurations then mapAttrs (name: _: { toplevel = nixosToplevel name; }) nixosConfigurations
      else clean 0 nixosConfigurations;
  }
  else { source = "none"; value = outputNames; }
)
