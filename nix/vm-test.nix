# NixOS VM test of services.ws-realtime: the module starts the server with a
# secret file (LoadCredential) and an API key from an environment file, the
# HTTP source only; a WebSocket client inside the VM subscribes with a token
# minted by `ws-realtime token`, a message published through /api/publish
# reaches it, and `check-config` rejects a bad value naming the variable.
{
  pkgs,
  module,
  package,
}:
let
  inherit (pkgs) lib;

  exe = lib.getExe package;
  apiKey = "vm-test-api-key-0123456789";
  channel = "vm-test";

  # Subscribes, marks itself ready, then waits for one message on the
  # channel and writes its `data`. Bounded in time so a lost message fails
  # the test instead of hanging it.
  client = pkgs.writeText "ws-vm-client.py" ''
    import asyncio
    import json
    import pathlib
    import sys

    from websockets.asyncio.client import connect


    async def receive_one(url, channel, ready_file, out_file):
        async with connect(url, open_timeout=10) as ws:
            connected = json.loads(await ws.recv())
            assert connected["type"] == "connected", connected
            await ws.send(json.dumps(
                {"type": "subscribe", "channels": [channel], "id": 1}))
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "error":
                    sys.exit(f"subscribe refused: {frame}")
                if frame.get("type") == "subscribed" and frame.get("id") == 1:
                    break
            pathlib.Path(ready_file).write_text("subscribed\n")
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "message" and frame["channel"] == channel:
                    pathlib.Path(out_file).write_text(json.dumps(frame["data"]))
                    return


    asyncio.run(asyncio.wait_for(receive_one(*sys.argv[1:5]), timeout=120))
  '';

  python = pkgs.python3.withPackages (ps: [ ps.websockets ]);
in
pkgs.testers.runNixOSTest {
  name = "ws-realtime-module";

  nodes.machine = {
    imports = [ module ];

    services.ws-realtime = {
      enable = true;
      inherit package;
      settings.bind_address = "127.0.0.1:8080";
      authSecretFile = "/etc/ws-realtime/auth-secret";
      environmentFile = "/etc/ws-realtime/env";
      extraEnvironment.WS_SOURCES = "http";
    };

    # Copied (mode set), not symlinked into the store, and root-only: the
    # service reads them through systemd, never directly.
    environment.etc."ws-realtime/auth-secret" = {
      text = "vm-test-secret-that-is-long-enough-for-hs256";
      mode = "0400";
    };
    environment.etc."ws-realtime/env" = {
      text = "WS_API_KEY=${apiKey}\n";
      mode = "0400";
    };

    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    import json

    machine.wait_for_unit("ws-realtime.service")
    machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/ready", timeout=60)

    with subtest("the service runs unprivileged"):
        machine.succeed("systemctl show -p DynamicUser ws-realtime | grep -qx DynamicUser=yes")
        machine.succeed("systemctl show -p CapabilityBoundingSet ws-realtime | grep -qx 'CapabilityBoundingSet='")

    with subtest("a published message reaches a subscribed WebSocket client"):
        token = machine.succeed(
            "${exe} token --secret \"$(cat /etc/ws-realtime/auth-secret)\" --sub vm"
        ).strip()
        machine.succeed(
            "systemd-run --unit=ws-vm-client --property=Type=exec "
            f"${python}/bin/python3 ${client} 'ws://127.0.0.1:8080/ws?token={token}' "
            "${channel} /tmp/ws-subscribed /tmp/ws-received"
        )
        machine.wait_until_succeeds("test -e /tmp/ws-subscribed", timeout=60)
        machine.succeed(
            "curl -fsS -X POST http://127.0.0.1:8080/api/publish "
            "-H 'X-API-Key: ${apiKey}' -H 'Content-Type: application/json' "
            "--data '{\"channel\":\"${channel}\",\"data\":{\"symbol\":\"AAPL\",\"price\":101.5}}'"
        )
        machine.wait_until_succeeds("test -e /tmp/ws-received", timeout=60)
        received = json.loads(machine.succeed("cat /tmp/ws-received"))
        assert received == {"symbol": "AAPL", "price": 101.5}, received

    with subtest("check-config accepts a good value and names the variable it rejects"):
        check = (
            "WS_AUTH_SECRET_FILE=/etc/ws-realtime/auth-secret WS_SOURCES=http "
            "WS_API_KEY=${apiKey} WS_CLIENT_BUFFER={} ${exe} check-config 2>&1"
        )
        machine.succeed(check.format("512"))
        output = machine.fail(check.format("plenty"))
        assert "WS_CLIENT_BUFFER" in output, output
  '';
}
