# services.ws-realtime: runs the ws-realtime WebSocket market-data gateway as
# a hardened systemd service. Modelled on nixpkgs' services.centrifugo.
#
# Configuration reaches the server two ways, and the environment wins:
# - `settings` is rendered to a TOML file passed as `serve --config FILE`;
#   TOML keys map onto the `WS_*` variables by table path
#   (`[kafka] brokers` is WS_KAFKA_BROKERS).
# - `extraEnvironment` (non-secret) and `environmentFile` (secrets such as
#   WS_API_KEY) become the process environment.
#
# The HS256 secret (`authSecretFile`) is passed with systemd's LoadCredential
# and the server is told its absolute path, WS_AUTH_SECRET_FILE=%d/auth-secret
# (%d is the unit's credentials directory); the TLS certificate and key
# (`tls.certFile`, `tls.keyFile`) travel the same way, as WS_TLS_CERT_FILE
# and WS_TLS_KEY_FILE. The module relies on that
# absolute-path form only, not on the server's lookup of bare names in
# $CREDENTIALS_DIRECTORY, so the secret never enters the Nix store and is
# readable by the service alone. A PEM public key (`authPublicKeyFile`) goes
# the same way (WS_AUTH_PUBLIC_KEY_FILE=%d/auth-public-key). A JWKS file
# (`authJwksFile`) is public and is reloaded when it changes, so its path is
# passed as is (a credential would be a copy taken at start).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  cfg = config.services.ws-realtime;

  settingsFormat = pkgs.formats.toml { };

  # TOML has no null: typed options left at null are dropped so the
  # server's own defaults apply.
  configFile = settingsFormat.generate "ws-realtime.toml" (
    lib.filterAttrsRecursive (_: value: value != null) cfg.settings
  );

  exe = lib.getExe cfg.package;

  # `:8080`, `0.0.0.0:8080`, `127.0.0.1:9000` and `[::]:8080` all end in
  # `:PORT`; the option's type guarantees the match.
  port = lib.toInt (lib.head (builtins.match ".*:([0-9]+)" cfg.settings.bind_address));

  # Only a port below 1024 needs a capability; everything else runs with an
  # empty bounding set.
  bindsPrivilegedPort = port < 1024;

  # The server's duration syntax: `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a
  # bare number of milliseconds.
  duration = types.strMatching "[0-9]+(\\.[0-9]+)?(ms|s|m|h)?";

  tlsEnabled = cfg.tls.certFile != null && cfg.tls.keyFile != null;

  # A file read at run time; never a store path, which would be world-readable.
  secretPath = types.pathWith {
    inStore = false;
    absolute = true;
  };

  nullOrOption =
    type: description: example:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description example;
    };
in
{
  options.services.ws-realtime = {
    enable = lib.mkEnableOption "ws-realtime, a WebSocket gateway for live market data";

    package = lib.mkPackageOption pkgs "ws-realtime" { };

    settings = mkOption {
      default = { };
      description = ''
        ws-realtime configuration, rendered to the TOML file the server reads
        with `--config`. Any key the server documents may be set; each maps
        onto its `WS_*` variable by table path (`kafka.brokers` is
        `WS_KAFKA_BROKERS`). Channel rules go in `channels.rules`, a list of
        attribute sets rendered as `[[channels.rules]]` tables. Variables from
        {option}`extraEnvironment` and {option}`environmentFile` take
        precedence. Typed options left at `null` keep the server's default.
      '';
      example = lib.literalExpression ''
        {
          bind_address = "0.0.0.0:8080";
          sources = [ "kafka" "http" ];
          kafka = {
            brokers = [ "kafka-1:9092" "kafka-2:9092" ];
            topics = [ "lines" "analytics" "^trades\\..*" ];
            mode = "broadcast";
          };
          slow_client_policy = "drop_oldest";
          max_connections_per_ip = 50;
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          bind_address = mkOption {
            type = types.strMatching ".*:[0-9]+";
            default = ":8080";
            example = "127.0.0.1:9000";
            description = ''
              Listen address of the WebSocket endpoint, the publish API,
              health checks and metrics (`WS_BIND_ADDRESS`). Its port is
              opened by {option}`services.ws-realtime.openFirewall`; a port
              below 1024 grants the service `CAP_NET_BIND_SERVICE`.
            '';
          };

          sources =
            nullOrOption
              (types.listOf (
                types.enum [
                  "kafka"
                  "redis"
                  "http"
                ]
              ))
              ''
                Where messages come from (`WS_SOURCES`; server default
                `[ "kafka" ]`). `http` is also on whenever `WS_API_KEY` is set.
              ''
              [
                "kafka"
                "http"
              ];

          kafka = mkOption {
            default = { };
            description = "The Kafka source (`[kafka]` table).";
            type = types.submodule {
              freeformType = settingsFormat.type;
              options = {
                brokers = nullOrOption (types.listOf types.str) "Bootstrap brokers (`WS_KAFKA_BROKERS`)." [
                  "kafka-1:9092"
                  "kafka-2:9092"
                ];
                topics =
                  nullOrOption (types.listOf types.str)
                    "Topics to read, or `^regex` patterns (`WS_KAFKA_TOPICS`)."
                    [
                      "lines"
                      "^trades\\..*"
                    ];
                mode =
                  nullOrOption
                    (types.enum [
                      "broadcast"
                      "group"
                    ])
                    ''
                      `broadcast` (server default): every replica reads every
                      partition in its own group. `group`: replicas share one
                      consumer group and commit after delivery
                      (`WS_KAFKA_MODE`).
                    ''
                    "group";
              };
            };
          };

          client_buffer =
            nullOrOption types.ints.positive
              "Outbound queue bound per connection, in frames (`WS_CLIENT_BUFFER`; server default 256)."
              1024;

          slow_client_policy =
            nullOrOption
              (types.enum [
                "disconnect"
                "drop_oldest"
              ])
              ''
                What a full outbound queue does (`WS_SLOW_CLIENT_POLICY`):
                `disconnect` (server default) closes with 1008,
                `drop_oldest` drops the oldest queued messages.
              ''
              "drop_oldest";

          heartbeat_interval =
            nullOrOption duration
              "WebSocket Ping period (`WS_HEARTBEAT_INTERVAL`; server default `30s`)."
              "15s";

          connection_timeout =
            nullOrOption duration
              "Silence after which a connection is closed (`WS_CONNECTION_TIMEOUT`; server default `60s`)."
              "45s";

          max_connections =
            nullOrOption types.ints.unsigned
              "Open connections in all; 0 means no limit (`WS_MAX_CONNECTIONS`; server default 0)."
              100000;

          max_connections_per_ip =
            nullOrOption types.ints.unsigned
              "Open connections per remote address; 0 means no limit (`WS_MAX_CONNECTIONS_PER_IP`; server default 0)."
              50;

          max_message_bytes =
            nullOrOption types.ints.positive
              "Largest inbound frame in bytes (`WS_MAX_MESSAGE_BYTES`; server default 65536)."
              16384;

          max_channels_per_connection =
            nullOrOption types.ints.positive
              "Channels one connection may hold (`WS_MAX_CHANNELS_PER_CONNECTION`; server default 100)."
              200;
        };
      };
    };

    authSecretFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/ws-realtime-auth-secret";
      description = ''
        File holding the HS256 secret that signs client tokens (at least 32
        bytes). Passed to the service with `LoadCredential`, so it may be
        readable by root only. Leave `null` only if {option}`environmentFile`
        sets `WS_AUTH_SECRET` instead.
      '';
    };

    authPublicKeyFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/var/lib/secrets/ws-realtime/idp-public.pem";
      description = ''
        A single PEM public key (RSA, P-256, P-384 or Ed25519) that verifies
        client tokens signed by an identity provider
        (`WS_AUTH_PUBLIC_KEY_FILE`). Passed with `LoadCredential`.
      '';
    };

    authJwksUrl = mkOption {
      type = types.nullOr (types.strMatching "https?://.+");
      default = null;
      example = "https://idp.example.com/realms/trading/protocol/openid-connect/certs";
      description = ''
        The identity provider's JWKS (`WS_AUTH_JWKS_URL`), fetched over
        HTTPS and refreshed periodically and whenever a token names an
        unknown key id. An unreachable URL at start does not stop the
        service: `/ready` says why until the keys are loaded.
      '';
    };

    authJwksFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/etc/ws-realtime/jwks.json";
      description = ''
        A JWKS document on disk instead of {option}`authJwksUrl`
        (`WS_AUTH_JWKS_FILE`), reloaded when it changes. It holds public
        keys only, so it is read in place and must be readable by the
        service's dynamic user.
      '';
    };

    tls = {
      certFile = mkOption {
        type = types.nullOr secretPath;
        default = null;
        example = "/var/lib/acme/ws.example.com/fullchain.pem";
        description = ''
          PEM certificate chain (leaf first) for `wss://` and `https://` on
          the listening port (`WS_TLS_CERT_FILE`). Set together with
          {option}`tls.keyFile`; both `null` serves plain `ws://`. Passed with
          `LoadCredential`, so it may be readable by root only.
        '';
      };

      keyFile = mkOption {
        type = types.nullOr secretPath;
        default = null;
        example = "/var/lib/acme/ws.example.com/key.pem";
        description = ''
          PEM private key of {option}`tls.certFile` (`WS_TLS_KEY_FILE`):
          PKCS#8, RSA or EC. Passed with `LoadCredential`, never through the
          Nix store. After renewing the files, `systemctl reload
          ws-realtime` swaps the certificate without dropping connections
          (the unit asks systemd to copy the credentials again on reload,
          then sends SIGHUP).
        '';
      };
    };

    environmentFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/ws-realtime.env";
      description = ''
        File of `NAME=value` lines added to the service's environment, for
        secrets such as `WS_API_KEY` (which enables `POST /api/publish`) or
        Kafka credentials (`WS_KAFKA_PROPERTY_sasl.password`). Read by
        systemd as root; its values override everything else.
      '';
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        WS_SOURCES = "http";
        WS_LOG_FORMAT = "json";
      };
      description = ''
        Extra `WS_*` (or other) variables for the service; they override
        {option}`settings`. They end up in the world-readable Nix store, so
        secrets belong in {option}`environmentFile`.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of {option}`services.ws-realtime.settings.bind_address` in the firewall.";
    };

    maxOpenFiles = mkOption {
      type = types.ints.positive;
      default = 1048576;
      description = ''
        File descriptor limit of the service (`LimitNOFILE`): every client
        holds one socket, so this caps the number of connections.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion =
          cfg.authSecretFile != null
          || cfg.authPublicKeyFile != null
          || cfg.authJwksUrl != null
          || cfg.authJwksFile != null
          || cfg.environmentFile != null
          || cfg.extraEnvironment ? WS_AUTH_SECRET_FILE;
        message = ''
          services.ws-realtime needs a way to verify tokens: set
          services.ws-realtime.authSecretFile (HS256), authPublicKeyFile,
          authJwksUrl or authJwksFile, or WS_AUTH_SECRET in
          services.ws-realtime.environmentFile.
        '';
      }
      {
        assertion = !(cfg.authJwksUrl != null && cfg.authJwksFile != null);
        message = "services.ws-realtime: set authJwksUrl or authJwksFile, not both.";
      }
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = ''
          services.ws-realtime.tls.certFile and services.ws-realtime.tls.keyFile
          must be set together (or both left null for plain ws://).
        '';
      }
      {
        assertion = !(cfg.extraEnvironment ? WS_AUTH_SECRET || cfg.extraEnvironment ? WS_API_KEY);
        message = ''
          services.ws-realtime.extraEnvironment would put WS_AUTH_SECRET or
          WS_API_KEY into the world-readable Nix store; use
          services.ws-realtime.authSecretFile or environmentFile instead.
        '';
      }
    ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];

    systemd.services.ws-realtime = {
      description = "ws-realtime WebSocket market-data gateway";
      wantedBy = [ "multi-user.target" ];
      # Kafka and Redis brokers are remote: start once the network is up.
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      environment = cfg.extraEnvironment;

      serviceConfig = {
        Type = "exec";
        # A bad setting fails here with a message naming the variable,
        # instead of a restart loop of `serve`.
        ExecStartPre = "${exe} check-config --config ${configFile}";
        ExecStart = "${exe} serve --config ${configFile}";
        Restart = "on-failure";
        RestartSec = "2s";

        LoadCredential =
          lib.optional (cfg.authSecretFile != null) "auth-secret:${cfg.authSecretFile}"
          ++ lib.optional (
            cfg.authPublicKeyFile != null
          ) "auth-public-key:${cfg.authPublicKeyFile}"
          ++ lib.optionals tlsEnabled [
            "tls-cert:${cfg.tls.certFile}"
            "tls-key:${cfg.tls.keyFile}"
          ];
        Environment =
          lib.optional (cfg.authSecretFile != null) "WS_AUTH_SECRET_FILE=%d/auth-secret"
          ++ lib.optional (cfg.authPublicKeyFile != null) "WS_AUTH_PUBLIC_KEY_FILE=%d/auth-public-key"
          ++ lib.optional (cfg.authJwksUrl != null) "WS_AUTH_JWKS_URL=${cfg.authJwksUrl}"
          ++ lib.optional (cfg.authJwksFile != null) "WS_AUTH_JWKS_FILE=${cfg.authJwksFile}"
          ++ lib.optionals tlsEnabled [
            "WS_TLS_CERT_FILE=%d/tls-cert"
            "WS_TLS_KEY_FILE=%d/tls-key"
          ];
        # With TLS, reload = copy the credentials again (systemd 260's
        # RefreshOnReload=; older versions ignore the key with a warning and
        # keep the copies made at start) and SIGHUP, which the server
        # answers by reloading its certificate. Without TLS the server does
        # not handle SIGHUP, so there is no reload.
        ExecReload = lib.mkIf tlsEnabled "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        RefreshOnReload = lib.mkIf tlsEnabled "credentials";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;

        LimitNOFILE = cfg.maxOpenFiles;

        DynamicUser = true;
        UMask = "0077";
        NoNewPrivileges = true;

        # The server writes nothing to disk: the whole file system is
        # read-only to it.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectProc = "invisible";
        ProcSubset = "pid";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        # Capabilities inside a private user namespace do not reach the
        # host's network namespace, so a privileged port needs it off.
        PrivateUsers = !bindsPrivilegedPort;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";

        # No capabilities at all, unless the bind address needs a port
        # below 1024.
        CapabilityBoundingSet = if bindsPrivilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = if bindsPrivilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
      };
    };
  };
}
