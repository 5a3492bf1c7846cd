# nixdeploy as a flake: the package (with shell completions and man pages), an app, a dev
# shell with the toolchain and everything the end-to-end tests run, and an overlay.
# docs/nix.md says what was and was not verified here (the package was not built: no network).
{
  description = "nixdeploy: deploy NixOS configurations to fleets, with deployments written as Rhai runbooks";

  # nixos-25.11: rustc 1.91; the crates in Cargo.lock need 1.88 or newer.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      linux = [ "x86_64-linux" "aarch64-linux" ];
      # Nothing Linux-only is compiled in (the sandbox shells out to `ip netns` at run time),
      # so the package is offered on darwin too; only the Linux systems are tested.
      darwin = [ "x86_64-darwin" "aarch64-darwin" ];
      systems = linux ++ darwin;
      forAll = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);

      nixdeployFor = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = cargoToml.package.name;
        version = cargoToml.package.version;
        src = ./.;
        cargoLock.lockFile = ./Cargo.lock;
        nativeBuildInputs = [ pkgs.installShellFiles pkgs.makeWrapper ];
        # The test suite needs root, network namespaces and sshd: run it with scripts/test.sh.
        doCheck = false;
        postInstall = ''
          installShellCompletion --cmd nixdeploy \
            --bash <("$out/bin/nixdeploy" completions bash) \
            --zsh <("$out/bin/nixdeploy" completions zsh) \
            --fish <("$out/bin/nixdeploy" completions fish)
          "$out/bin/nixdeploy" man --out man
          installManPage man/*.1
          # ssh is needed at run time; the user's own ssh and nix come first on PATH.
          wrapProgram "$out/bin/nixdeploy" --suffix PATH : ${lib.makeBinPath [ pkgs.openssh ]}
        '';
        meta = {
          description = cargoToml.package.description;
          license = [ lib.licenses.mit lib.licenses.asl20 ];
          mainProgram = "nixdeploy";
          platforms = systems;
        };
      };
    in
    {
      overlays.default = final: prev: { nixdeploy = nixdeployFor final; };

      packages = forAll (pkgs: rec {
        nixdeploy = nixdeployFor pkgs;
        default = nixdeploy;
      });

      apps = forAll (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nixdeploy";
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.git
            pkgs.tmux
            pkgs.openssh
            pkgs.nix
          ] ++ lib.optionals pkgs.stdenv.isLinux [
            # The sandbox fleet: network namespaces, sshd, busybox-built systems, sudo for
            # the non-root login tests. Only the busybox binary is put on PATH: its applets
            # would otherwise shadow coreutils in the shell.
            (pkgs.runCommand "busybox-binary" { } ''
              mkdir -p "$out/bin"
              ln -s ${pkgs.pkgsStatic.busybox}/bin/busybox "$out/bin/busybox"
            '')
            pkgs.iproute2
            pkgs.sudo
          ];
        };
      });
    };
}
