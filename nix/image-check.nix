# Offline check of nix/image.nix, for CI that cannot evaluate nixpkgs (see
# .ci/nix): evaluates the image definition with stand-ins for nixpkgs'
# `lib.getExe`, `cacert` and `dockerTools.buildLayeredImage` (which here
# returns its arguments) and asserts what deploy/ relies on. Run by
# .ci/deploy:
#
#   nix-instantiate --eval --strict nix/image-check.nix
let
  package = {
    outPath = "/nix/store/00000000000000000000000000000000-ws-realtime-0.1.0";
    version = "0.1.0";
    meta = {
      description = "ws-realtime";
      homepage = "https://github.com/ws-realtime/ws-realtime";
      mainProgram = "ws-realtime";
    };
  };
  cacert = {
    outPath = "/nix/store/00000000000000000000000000000000-nss-cacert";
  };
  pkgs = {
    lib.getExe = p: "${p.outPath}/bin/${p.meta.mainProgram}";
    inherit cacert;
    dockerTools.buildLayeredImage = args: args;
  };
  image = import ./image.nix {
    inherit pkgs package;
    revision = "0123456";
  };
  inherit (image) config;
  check = what: ok: if ok then what else throw "nix/image.nix: ${what}";
in
[
  (check "runs as a non-root numeric user" (
    builtins.match "[0-9]+:[0-9]+" config.User != null && config.User != "0:0"
  ))
  (check "contains only the package and CA certificates (no shell)" (
    image.contents == [
      package
      cacert
    ]
  ))
  (check "starts the server's binary with `serve`" (
    config.Entrypoint == [ "${package.outPath}/bin/ws-realtime" ] && config.Cmd == [ "serve" ]
  ))
  (check "listens on 8080, the port deploy/kubernetes probes" (
    builtins.elem "WS_BIND_ADDRESS=:8080" config.Env && config.ExposedPorts ? "8080/tcp"
  ))
  (check "labels the version, revision and source" (
    config.Labels."org.opencontainers.image.version" == "0.1.0"
    && config.Labels."org.opencontainers.image.revision" == "0123456"
    && config.Labels."org.opencontainers.image.source" == package.meta.homepage
  ))
  (check "is tagged with the version" (image.tag == "0.1.0"))
]
