# The OCI image of the server, for Kubernetes and Compose (deploy/): the
# reference build of what deploy/Dockerfile builds without Nix.
#
#   nix build .#image && docker load < result
#
# Only the binary's closure (glibc, the package) and CA certificates (for
# `rediss://`); no shell, no package manager, no /etc/passwd: the server
# runs as the numeric non-root user 65532, as deploy/kubernetes expects.
{
  pkgs,
  package,
  revision,
}:
let
  inherit (pkgs) lib;
in
pkgs.dockerTools.buildLayeredImage {
  name = "ws-realtime";
  tag = package.version;

  # The package's bin/ is linked into /bin; its run-time closure comes with
  # it. cacert provides /etc/ssl/certs.
  contents = [
    package
    pkgs.cacert
  ];

  config = {
    Entrypoint = [ (lib.getExe package) ];
    Cmd = [ "serve" ];
    # distroless' `nonroot`, the same UID as deploy/Dockerfile.
    User = "65532:65532";
    ExposedPorts."8080/tcp" = { };
    Env = [
      # Listen on every interface: outside the container is where clients are.
      "WS_BIND_ADDRESS=:8080"
      "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
    ];
    Labels = {
      "org.opencontainers.image.title" = "ws-realtime";
      "org.opencontainers.image.description" = package.meta.description;
      "org.opencontainers.image.version" = package.version;
      "org.opencontainers.image.revision" = revision;
      "org.opencontainers.image.source" = package.meta.homepage;
      "org.opencontainers.image.licenses" = "MIT OR Apache-2.0";
    };
  };
}
