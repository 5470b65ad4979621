{
  description = "ws-realtime: live market data from Kafka, Redis pub/sub and HTTP to authenticated WebSocket clients";

  # Exactly these two inputs: flake.lock pins both, and `.ci/nix` checks
  # that the lock still matches them.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
    }:
    let
      inherit (nixpkgs) lib;

      # librdkafka, systemd hardening and the VM test are Linux-only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The crane build per system, shared by packages, apps, checks and the
      # dev shell so each derivation is defined once.
      builds = forAllSystems (pkgs: import ./nix/crane.nix { inherit pkgs crane; });
      buildFor = pkgs: builds.${pkgs.stdenv.hostPlatform.system};
    in
    {
      packages = forAllSystems (pkgs: {
        default = (buildFor pkgs).package;
        ws-realtime = (buildFor pkgs).package;
        # The container image (deploy/ documents its use): `nix build .#image`.
        image = import ./nix/image.nix {
          inherit pkgs;
          inherit (buildFor pkgs) package;
          revision = self.rev or "dirty";
        };
      });

      # `nix run . -- dev` starts the dev server with its synthetic feed;
      # `nix run . -- serve` runs production mode from WS_* variables.
      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe (buildFor pkgs).package;
          meta.description = "ws-realtime gateway (`nix run . -- dev` for the dev server, `-- serve` for production)";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = (buildFor pkgs).craneLib.devShell {
          # cmake, pkg-config and zlib, so `cargo build` in the shell links
          # librdkafka exactly like the package does.
          inputsFrom = [ (buildFor pkgs).package ];
          packages = [
            pkgs.cargo-fuzz
            pkgs.cargo-nextest
            pkgs.kcat
            pkgs.websocat
          ];
        };
      });

      checks = forAllSystems (
        pkgs:
        let
          build = buildFor pkgs;
        in
        {
          inherit (build)
            package
            clippy
            tests
            doctests
            sim
            fuzz-seeds
            fmt
            ;
          nixos-module = import ./nix/vm-test.nix {
            inherit pkgs;
            inherit (build) package;
            module = self.nixosModules.default;
          };
        }
      );

      # services.ws-realtime, with `package` defaulting to this flake's build
      # for the host's system.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.ws-realtime.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
    };
}
