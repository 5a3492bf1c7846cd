# Evaluates the top-level flake.nix's `outputs` with stand-in inputs: a fake nixpkgs that has
# just the functions the flake calls, each returning plain data the test can inspect. No
# network and no real nixpkgs are needed; `nix build` is not what this checks.
{ repo }:
let
  flake = import (repo + "/flake.nix");
  systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  lib = {
    inherit genAttrs;
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
    optionals = cond: list: if cond then list else [ ];
    licenses = { mit = "MIT"; asl20 = "Apache-2.0"; };
  };
  fake = name: { inherit name; outPath = "/nix/store/stand-in-${name}"; };
  pkgsFor = system: {
    stdenv = {
      hostPlatform = { inherit system; };
      isLinux = builtins.match ".*-linux" system != null;
    };
    rustPlatform.buildRustPackage = args: args // {
      name = "${args.pname}-${args.version}";
      outPath = "/nix/store/stand-in-${system}-${args.pname}";
      builtWith = "rustPlatform.buildRustPackage";
    };
    mkShell = args: args // { name = "dev-shell"; };
    runCommand = name: env: script: (fake name) // { inherit script; };
    pkgsStatic.busybox = fake "busybox-static";
  } // genAttrs [ "installShellFiles" "makeWrapper" "cargo" "rustc" "clippy" "rustfmt" "git"
    "tmux" "openssh" "nix" "iproute2" "sudo" "busybox" ] fake;
  nixpkgs = { inherit lib; legacyPackages = genAttrs systems pkgsFor; };
  self = outputs // { outPath = repo; };
  outputs = flake.outputs { inherit self nixpkgs; };
  package = system: outputs.packages.${system}.default;
  names = ps: map (p: p.name) ps;
in
{
  description = flake.description;
  inputs = builtins.mapAttrs (n: i: i.url) flake.inputs;
  outputs = builtins.attrNames outputs;
  packages = builtins.mapAttrs (s: ps: builtins.attrNames ps) outputs.packages;
  apps = builtins.mapAttrs (s: a: { type = a.default.type; program = a.default.program; }) outputs.apps;
  devShells = builtins.mapAttrs (s: d: names d.default.packages) outputs.devShells;
  package = {
    builtWith = (package "x86_64-linux").builtWith;
    name = (package "x86_64-linux").name;
    src = toString (package "x86_64-linux").src;
    lockFile = toString (package "x86_64-linux").cargoLock.lockFile;
    out = (package "x86_64-linux").outPath;
    nativeBuildInputs = names (package "x86_64-linux").nativeBuildInputs;
    postInstall = (package "x86_64-linux").postInstall;
    mainProgram = (package "x86_64-linux").meta.mainProgram;
  };
  overlay = (outputs.overlays.default (pkgsFor "aarch64-linux") { }).nixdeploy.outPath;
}
