# The crane build of the workspace: the package and the cargo-based checks.
#
# One `buildDepsOnly` derivation compiles every dependency of the whole
# workspace (normal, build and dev dependencies, release profile) once; the
# package, clippy, the tests, the simulation suite and the fuzz seed replay
# all start from its target directory, so a source change recompiles only
# the workspace's own crates.
{ pkgs, crane }:
let
  inherit (pkgs) lib;
  craneLib = crane.mkLib pkgs;
  fs = lib.fileset;

  # Everything cargo may read: sources, manifests, insta snapshots, test
  # fixtures, proptest regressions, docs a test may read, and the committed
  # fuzz seeds. The Nix files and CI scripts are left out so editing them
  # does not rebuild the Rust code; fuzz/ is its own workspace (cargo-fuzz,
  # libFuzzer) and only its seeds are read by `cargo test --test fuzz_seeds`.
  src = fs.toSource {
    root = ../.;
    fileset = fs.difference ../. (
      fs.unions [
        ../flake.nix
        ../flake.lock
        ./.
        (fs.maybeMissing ../nixos-module)
        (fs.maybeMissing ../.ci)
        (fs.difference (fs.maybeMissing ../fuzz) (fs.maybeMissing ../fuzz/seeds))
      ]
    );
  };

  commonArgs = {
    inherit src;
    pname = "ws-realtime";
    strictDeps = true;

    # rdkafka is built with its `cmake-build` feature (the crate's own
    # `cmake-build` feature, turned on only here through `cargoExtraArgs`;
    # plain cargo builds keep librdkafka's configure script): its own `configure` starts with
    # `#!/usr/bin/env bash`, which the build sandbox does not have. zlib is
    # the only system library that feature set links (no ssl, sasl, curl or
    # zstd features are enabled); libz-sys finds it through pkg-config.
    nativeBuildInputs = [
      pkgs.cmake
      pkgs.pkg-config
    ];
    buildInputs = [ pkgs.zlib ];

    # cmake is here for the rdkafka-sys build script only; its setup hook
    # must not try to configure the cargo workspace as a CMake project.
    dontUseCmakeConfigure = true;

    # Dependencies of every workspace member, so `sim` reuses them too.
    cargoExtraArgs = "--locked --workspace --features ws-realtime/cmake-build";
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  # Settings shared by the derivations that run tests: a snapshot mismatch
  # must fail the build rather than leave `.snap.new` files behind.
  testArgs = commonArgs // {
    inherit cargoArtifacts;
    INSTA_UPDATE = "no";
  };

  package = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      # Only the server binary; `sim` is a test-only member.
      cargoExtraArgs = "--locked -p ws-realtime --features ws-realtime/cmake-build";
      # Tests run in their own checks below, not on every package build.
      doCheck = false;
      meta = {
        description = "Delivers live market data from Kafka, Redis pub/sub and an HTTP publish API to authenticated WebSocket clients";
        homepage = "https://github.com/ws-realtime/ws-realtime";
        license = with lib.licenses; [
          mit
          asl20
        ];
        mainProgram = "ws-realtime";
        platforms = lib.platforms.linux;
      };
    }
  );
in
{
  inherit craneLib package;

  # `cargo clippy --workspace --all-targets -- -D warnings`, as CI runs it.
  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets -- -D warnings";
    }
  );

  # Unit, property, snapshot and loopback integration tests of the server
  # crate. The simulation suite has its own check so a failure says which.
  tests = craneLib.cargoNextest (
    testArgs
    // {
      cargoExtraArgs = "--locked -p ws-realtime --features ws-realtime/cmake-build";
    }
  );

  # Doc tests, which nextest does not run; together with `tests` this is
  # `cargo test -p ws-realtime`.
  doctests = craneLib.cargoDocTest (
    testArgs
    // {
      cargoExtraArgs = "--locked -p ws-realtime --features ws-realtime/cmake-build";
    }
  );

  # The turmoil simulations (`cargo test -p sim`).
  sim = craneLib.cargoTest (
    testArgs
    // {
      # cargoTest names every derivation `<pname>-test`; say which one.
      pname = "ws-realtime-sim";
      cargoExtraArgs = "--locked -p sim --features ws-realtime/cmake-build";
    }
  );

  # Replays every committed seed in fuzz/seeds/ through the fuzz target
  # bodies, which the `fuzzing` feature exposes.
  fuzz-seeds = craneLib.cargoTest (
    testArgs
    // {
      pname = "ws-realtime-fuzz-seeds";
      cargoExtraArgs = "--locked -p ws-realtime --features fuzzing,cmake-build";
      cargoTestExtraArgs = "--test fuzz_seeds";
    }
  );

  # `cargo fmt --all -- --check`; needs no compiled dependencies.
  fmt = craneLib.cargoFmt {
    inherit src;
    pname = "ws-realtime";
    cargoExtraArgs = "--all";
  };
}
