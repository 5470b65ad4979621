// The live page `ws-realtime dev` serves at `/`: built on the client
// library, it shows the feed as a table, a sparkline, rates and latency.

import { WsRealtime, type Message, type Subscription } from "../src/index.js";
import { fetchCounts } from "./metrics.js";
import { drawSparkline, format } from "./sparkline.js";
import { Window } from "./stats.js";

/** What one row of the table knows about a symbol. */
interface Row {
  symbol: string;
  price?: number;
  first?: number;
  size?: number;
  changePercent?: number;
  volume?: number;
  bid?: number;
  ask?: number;
  bids?: [number, number][];
  asks?: [number, number][];
  latency?: number;
  pos?: string;
  updated: number;
  direction: 0 | 1 | -1;
  history: number[];
  element?: HTMLTableRowElement;
}

const FEED_CHANNELS = ["lines", "order_book", "analytics"];
const HISTORY = 150;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const rows = new Map<string, Row>();
const window3s = new Window(3000);
const subscriptions = new Map<string, Subscription>();
let selected: string | undefined;
let client: WsRealtime | undefined;
let dirty = true;

/** The token: injected by `ws-realtime dev` only, else `#token=` or the form. */
function initialToken(): string | undefined {
  try {
    const config = JSON.parse($("ws-realtime-config").textContent || "{}") as { token?: string };
    if (config.token) return config.token;
  } catch {
    // No config: not the dev server.
  }
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  return fromHash || undefined;
}

function wsUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function setStatus(kind: "live" | "wait" | "down", text: string): void {
  const pill = $("status");
  pill.dataset.kind = kind;
  $("status-text").textContent = text;
}

function start(token: string): void {
  $("token-form").hidden = true;
  client?.close();
  // Pings notice a broken network long before TCP would.
  const c = new WsRealtime(wsUrl(), { token, pingIntervalMs: 15_000 });
  client = c;
  c.on("connected", ({ frame, reconnect }) => {
    setStatus("live", reconnect ? "live · reconnected" : "live");
    $("server").textContent = `${frame.userId} @ ${frame.serverId}`;
  });
  c.on("disconnected", (d) => {
    if (d.willReconnect) setStatus("wait", `reconnecting${d.delayMs ? ` in ${(d.delayMs / 1000).toFixed(1)} s` : "…"}`);
    else setStatus("down", "disconnected");
  });
  c.on("error", (e) => {
    log("error", e.message);
    if (e.fatal) {
      setStatus("down", e.code === "unauthorized" ? "token refused" : "stopped");
      $("token-form").hidden = false;
    }
  });
  c.on("message", onMessage);
  for (const box of document.querySelectorAll<HTMLInputElement>("#channels input[type=checkbox]")) {
    if (box.checked) toggle(box.value, true);
  }
  void c.connect();
}

function toggle(channel: string, on: boolean): void {
  if (!client) return;
  if (on && !subscriptions.has(channel)) {
    const sub = client.subscribe(channel);
    subscriptions.set(channel, sub);
    sub.ready.catch((e: Error) => {
      log("error", `${channel}: ${e.message}`);
      subscriptions.delete(channel);
      const box = document.querySelector<HTMLInputElement>(`#channels input[value="${CSS.escape(channel)}"]`);
      if (box) box.checked = false;
    });
  } else if (!on) {
    subscriptions.get(channel)?.unsubscribe();
    subscriptions.delete(channel);
  }
}

function onMessage(message: Message): void {
  const now = Date.now();
  const data = (message.data ?? {}) as Record<string, unknown>;
  const stamp = typeof data.timestamp === "number" ? data.timestamp : undefined;
  const latency = stamp !== undefined ? Math.max(0, now - stamp) : undefined;
  window3s.add(now, latency);
  log(message.channel, JSON.stringify(message.data), message.pos);
  const symbol = typeof data.symbol === "string" ? data.symbol : undefined;
  if (!symbol) return;
  let row = rows.get(symbol);
  if (!row) {
    row = { symbol, updated: now, direction: 0, history: [] };
    rows.set(symbol, row);
    selected ??= symbol;
  }
  row.updated = now;
  row.latency = latency;
  row.pos = message.pos;
  if (message.channel === "order_book") {
    const bids = data.bids as [number, number][] | undefined;
    const asks = data.asks as [number, number][] | undefined;
    row.bid = bids?.[0]?.[0];
    row.ask = asks?.[0]?.[0];
    row.bids = bids;
    row.asks = asks;
  } else if (typeof data.price === "number") {
    row.direction = row.price === undefined || data.price === row.price ? 0 : data.price > row.price ? 1 : -1;
    row.price = data.price;
    row.first ??= data.price;
    if (typeof data.size === "number") row.size = data.size;
    row.history.push(data.price);
    if (row.history.length > HISTORY) row.history.shift();
  }
  if (typeof data.changePercent === "number") row.changePercent = data.changePercent;
  if (typeof data.volume === "number") row.volume = data.volume;
  dirty = true;
}

function cell(text: string, className = ""): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderTable(): void {
  const body = $("rows");
  const now = Date.now();
  const sorted = [...rows.values()].sort((a, b) => a.symbol.localeCompare(b.symbol));
  $("empty").hidden = sorted.length > 0;
  for (const row of sorted) {
    const change =
      row.changePercent ?? (row.price !== undefined && row.first ? ((row.price - row.first) / row.first) * 100 : undefined);
    const tr = document.createElement("tr");
    tr.dataset.symbol = row.symbol;
    if (row.symbol === selected) tr.classList.add("selected");
    if (now - row.updated < 400 && row.direction !== 0) tr.classList.add(row.direction > 0 ? "up" : "down");
    tr.append(
      cell(row.symbol, "sym"),
      cell(row.price !== undefined ? format(row.price) : "–", "num price"),
      cell(change !== undefined ? `${change >= 0 ? "+" : ""}${change.toFixed(2)}%` : "–", `num ${change === undefined ? "" : change >= 0 ? "pos" : "neg"}`),
      cell(row.bid !== undefined ? format(row.bid) : "–", "num dim"),
      cell(row.ask !== undefined ? format(row.ask) : "–", "num dim"),
      cell(row.size !== undefined ? String(row.size) : "–", "num"),
      cell(row.volume !== undefined ? row.volume.toLocaleString("en-US") : "–", "num"),
      cell(row.latency !== undefined ? `${row.latency} ms` : "–", "num dim"),
      cell(row.pos ?? "–", "pos-col"),
    );
    tr.onclick = () => {
      selected = row.symbol;
      dirty = true;
    };
    if (row.element) body.replaceChild(tr, row.element);
    else body.append(tr);
    row.element = tr;
  }
}

const logLines: HTMLElement[] = [];
function log(channel: string, text: string, pos?: string): void {
  const line = document.createElement("div");
  line.className = channel === "error" ? "line err" : "line";
  const tag = document.createElement("span");
  tag.className = `tag tag-${channel}`;
  tag.textContent = channel;
  const body = document.createElement("span");
  body.textContent = pos ? `${pos}  ${text}` : text;
  line.append(tag, body);
  const list = $("log");
  list.prepend(line);
  logLines.unshift(line);
  while (logLines.length > 40) logLines.pop()?.remove();
}

function renderStats(): void {
  const now = Date.now();
  $("rate").textContent = window3s.rate(now).toFixed(1);
  const p50 = window3s.latency(now, 0.5);
  const p95 = window3s.latency(now, 0.95);
  $("latency").textContent = p50 === undefined ? "–" : String(Math.round(p50));
  $("latency-p95").textContent = p95 === undefined ? "p95 –" : `p95 ${Math.round(p95)} ms`;
  $("received").textContent = `${(client?.stats.messages ?? 0).toLocaleString("en-US")} received`;
  const row = selected ? rows.get(selected) : undefined;
  $("spark-symbol").textContent = row?.symbol ?? "–";
  $("spark-price").textContent = row?.price !== undefined ? format(row.price) : "";
  drawSparkline($<HTMLCanvasElement>("spark"), row?.history ?? []);
  renderBook(row);
}

/** The selected symbol's last order book: asks above, bids below, bars by size. */
function renderBook(row: Row | undefined): void {
  $("book-symbol").textContent = row?.symbol ?? "–";
  if (!row?.bids || !row.asks) return;
  const asks = [...row.asks].slice(0, 5).reverse();
  const bids = row.bids.slice(0, 5);
  const biggest = Math.max(...asks.map((l) => l[1]), ...bids.map((l) => l[1]), 1);
  const level = (side: "ask" | "bid", [price, size]: [number, number]) => {
    const div = document.createElement("div");
    div.className = `level ${side}`;
    const bar = document.createElement("i");
    bar.className = "bar";
    bar.style.width = `${(100 * size) / biggest}%`;
    const px = document.createElement("span");
    px.className = "px";
    px.textContent = format(price);
    const qty = document.createElement("span");
    qty.className = "qty";
    qty.textContent = String(size);
    div.append(bar, px, qty);
    return div;
  };
  const mid = document.createElement("div");
  mid.className = "mid";
  const spread = row.ask !== undefined && row.bid !== undefined ? row.ask - row.bid : undefined;
  mid.textContent = spread !== undefined ? `spread ${format(spread)}` : "";
  $("book-spread").textContent = row.ask !== undefined && row.bid !== undefined ? `mid ${format((row.ask + row.bid) / 2)}` : "";
  $("book").replaceChildren(...asks.map((l) => level("ask", l)), mid, ...bids.map((l) => level("bid", l)));
}

async function pollMetrics(): Promise<void> {
  try {
    const counts = await fetchCounts(location.origin);
    $("connections").textContent = counts.connections !== undefined ? String(counts.connections) : "–";
    $("server-channels").textContent = counts.channels !== undefined ? String(counts.channels) : "–";
    $("subscriptions").textContent =
      counts.subscriptions !== undefined ? `${counts.subscriptions} subscriptions` : "";
  } catch {
    $("connections").textContent = "–";
  }
}

function frame(): void {
  if (dirty) {
    dirty = false;
    renderTable();
  }
  requestAnimationFrame(frame);
}

function main(): void {
  const picker = $("channels");
  for (const channel of FEED_CHANNELS) addChannelBox(picker, channel, true);
  $<HTMLFormElement>("add-channel").onsubmit = (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("new-channel");
    const name = input.value.trim();
    if (name && !picker.querySelector(`input[value="${CSS.escape(name)}"]`)) {
      addChannelBox(picker, name, true);
      toggle(name, true);
    }
    input.value = "";
  };
  $<HTMLFormElement>("token-form").onsubmit = (event) => {
    event.preventDefault();
    const token = $<HTMLInputElement>("token").value.trim();
    if (token) start(token);
  };
  const token = initialToken();
  if (token) start(token);
  else {
    setStatus("down", "no token");
    $("token-form").hidden = false;
  }
  requestAnimationFrame(frame);
  setInterval(renderStats, 250);
  setInterval(() => {
    // Flash classes fade out even when no new message arrives.
    dirty = true;
  }, 400);
  void pollMetrics();
  setInterval(() => void pollMetrics(), 2000);
  renderStats();
}

function addChannelBox(picker: HTMLElement, channel: string, checked: boolean): void {
  const label = document.createElement("label");
  label.className = "chip";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.value = channel;
  box.checked = checked;
  box.onchange = () => toggle(channel, box.checked);
  const text = document.createElement("span");
  text.textContent = channel;
  label.append(box, text);
  picker.append(label);
}

main();
