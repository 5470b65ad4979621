"""A Python `websockets` client (permessage-deflate on by default) for
tests/deflate_clients.rs: prints the negotiated extensions, sends a
subscribe request (compressed by the library), then prints every frame
until it has seen the number of `message` frames asked for."""
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url: str, messages: int) -> None:
    async with connect(url, max_size=2**24) as ws:
        print("EXT", ws.response.headers.get("Sec-WebSocket-Extensions", "-"), flush=True)
        request = {"type": "subscribe", "channels": ["other"], "id": 7,
                   "padding": "x" * 600}
        await ws.send(json.dumps(request))
        seen = 0
        while seen < messages:
            text = await ws.recv()
            frame = json.loads(text)
            print("FRAME", text, flush=True)
            if frame.get("type") == "subscribed" and frame.get("id") == 7:
                print("READY", flush=True)
            if frame.get("type") == "message":
                seen += 1


asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2])), 60))
