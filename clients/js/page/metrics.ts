// The server's own counts, read from its Prometheus `/metrics` text.

/** The gauges the page shows. */
export interface ServerCounts {
  connections?: number;
  channels?: number;
  subscriptions?: number;
}

/** The value of an unlabelled sample `name` in Prometheus text, if present. */
export function sample(text: string, name: string): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " ") continue;
    const value = Number(rest.trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/** Fetches `/metrics` next to the page. */
export async function fetchCounts(base: string): Promise<ServerCounts> {
  const response = await fetch(`${base}/metrics`, { cache: "no-store" });
  if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  const text = await response.text();
  return {
    connections: sample(text, "websocket_connections_total"),
    channels: sample(text, "websocket_channels"),
    subscriptions: sample(text, "websocket_subscriptions"),
  };
}
