// A Node `ws` client (permessage-deflate offered by default, as browsers
// do) for tests/deflate_clients.rs: prints the negotiated extensions, sends
// a subscribe request (compressed by the library: threshold 0), then prints
// every frame until it has seen the number of `message` frames asked for.
const WebSocket = require('ws');

const [url, wanted] = [process.argv[2], Number(process.argv[3])];
const ws = new WebSocket(url, {
  perMessageDeflate: { threshold: 0 },
  maxPayload: 1 << 24,
});
setTimeout(() => process.exit(3), 60000).unref();
let seen = 0;
ws.on('upgrade', (response) => {
  console.log('EXT', response.headers['sec-websocket-extensions'] || '-');
});
ws.on('open', () => {
  const request = { type: 'subscribe', channels: ['other'], id: 7, padding: 'x'.repeat(600) };
  ws.send(JSON.stringify(request));
});
ws.on('message', (data, isBinary) => {
  const frame = JSON.parse(data.toString());
  console.log('FRAME', data.toString());
  if (frame.type === 'subscribed' && frame.id === 7) console.log('READY');
  if (frame.type === 'message' && ++seen === wanted) ws.close(1000);
});
ws.on('close', () => process.exit(0));
ws.on('error', (error) => {
  console.error(error);
  process.exit(2);
});
