/**
 * `WsRealtime`: one logical connection to a ws-realtime server that stays up
 * by itself. It reconnects with capped, fully jittered exponential back-off,
 * resubscribes every channel (from its cursor when the server keeps stream
 * state), renews tokens through `getToken`, and stops — saying why — only on
 * refusals that retrying cannot fix.
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { Emitter, type Off } from "./emitter.js";
import { WsRealtimeError } from "./errors.js";
import type { ConnectedFrame, ServerFrame, SubscribedFrame, UnsubscribedFrame } from "./frames.js";
import { nextStep, probeRefusal } from "./policy.js";
import { OPEN, resolveWebSocket, type SocketLike, type WebSocketConstructor } from "./socket.js";
import {
  Subscriptions,
  toMessage,
  type Message,
  type SubscribedInfo,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionRecord,
} from "./subscriptions.js";

/** Options of {@link WsRealtime}. Give `token`, `getToken`, or both. */
export interface WsRealtimeOptions {
  /** A fixed token (or the first one, when `getToken` is also given). */
  token?: string;
  /** Returns a fresh token: called before connecting without one, after a 401, on 1008 "token expired" and on `refresh_required`. */
  getToken?: () => Promise<string> | string;
  /** Reconnect back-off (full jitter, capped). */
  backoff?: BackoffOptions;
  /** Resubscribe from each channel's cursor (`since`) when the server supports it (default true). */
  recover?: boolean;
  /** When a handshake fails, GET the same URL over HTTP to learn the refusal's status (default true; browsers hide it). */
  probeRefusals?: boolean;
  /**
   * Send a JSON `ping` this often while connected, and treat a connection
   * whose pong has not come back by the next one as dead (reconnect). Off
   * (0) by default: browsers cannot see the server's WebSocket pings, so
   * turn this on to notice a silently broken network quickly.
   */
  pingIntervalMs?: number;
  /** The WebSocket constructor; default: the global one, else the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** Random source for the jitter (tests). */
  random?: () => number;
}

/** Payload of the `connected` event. */
export interface ConnectedEvent {
  /** The server's `connected` frame. */
  frame: ConnectedFrame;
  /** True when this is a reconnect. */
  reconnect: boolean;
}

/** Payload of the `disconnected` event. */
export interface DisconnectedEvent {
  /** The WebSocket close code (1006 when the connection failed or dropped). */
  code: number;
  /** The close reason the server gave. */
  reason: string;
  /** Whether the client will try again. */
  willReconnect: boolean;
  /** How long it waits before trying, in ms. */
  delayMs?: number;
  /** Attempts since the last successful connection. */
  attempt: number;
}

/** The events of {@link WsRealtime} and their payloads. */
export interface WsRealtimeEvents {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: WsRealtimeError;
  message: Message;
  subscribed: SubscribedInfo;
  unsubscribed: { channel: string; reason?: string };
  refreshed: { expiresAt: number };
}

/** Where the connection stands. */
export type ConnectionState = "idle" | "connecting" | "connected" | "waiting" | "closed";

/** Counters the client keeps (for read-outs and tests). */
export interface ClientStats {
  /** WebSocket frames received. */
  frames: number;
  /** Frames that were JSON arrays (batches). */
  batches: number;
  /** `message` frames received (including those inside batches). */
  messages: number;
  /** Successful connections, the first included. */
  connects: number;
}

/** A pending request waiting for its answer, by id. */
type Pending =
  | { kind: "subscribe"; channels: string[]; resubscribe: boolean; asked: Record<string, string> }
  | { kind: "unsubscribe" }
  | { kind: "refresh" }
  | { kind: "ping"; sentAt: number; resolve: (rtt: number) => void };

/** A client of one ws-realtime server. */
export class WsRealtime extends Emitter<WsRealtimeEvents> {
  /** The `/ws` URL without the token. */
  private readonly url: string;
  /** The options, defaults applied. */
  private readonly options: WsRealtimeOptions;
  /** The token the next connection uses. */
  private token: string | undefined;
  /** What the application wants, kept across reconnects. */
  private readonly subs = new Subscriptions();
  /** The current socket, if any. */
  private socket: SocketLike | undefined;
  /** The timer of the next attempt, while waiting. */
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Failed attempts since the last `connected`: drives the back-off. */
  private attempt = 0;
  /** Whether a 401 already made us ask `getToken` again (a second 401 is final). */
  private authRetried = false;
  /** Whether the current socket got its `connected` frame. */
  private opened = false;
  /** Whether any connection ever succeeded (for `reconnect` in events). */
  private everConnected = false;
  /** Requests waiting for an answer, by id. */
  private readonly pending = new Map<number | string, Pending>();
  /** The next request id. */
  private nextId = 1;
  /** The liveness ping timer, while connected with `pingIntervalMs`. */
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  /** Whether the last liveness ping is still unanswered. */
  private pongDue = false;
  /** Settles the promise `connect()` returned, until the first success or a fatal error. */
  private connectWaiters: { resolve: (frame: ConnectedFrame) => void; reject: (e: Error) => void }[] = [];
  /** Where the connection stands. */
  state: ConnectionState = "idle";
  /** The last `connected` frame. */
  connection: ConnectedFrame | undefined;
  /** Counters. */
  readonly stats: ClientStats = { frames: 0, batches: 0, messages: 0, connects: 0 };

  /** A client for `url` (e.g. `ws://127.0.0.1:8080/ws`); call {@link connect} to start. */
  constructor(url: string, options: WsRealtimeOptions = {}) {
    super();
    if (!options.token && !options.getToken) {
      throw new TypeError("WsRealtime: give options.token or options.getToken");
    }
    this.url = url;
    this.options = { recover: true, probeRefusals: true, ...options };
    this.token = options.token;
  }

  /**
   * Starts connecting (and keeps reconnecting). Resolves with the first
   * `connected` frame; rejects only when the client stops for good (401
   * after a fresh token, 403, or `close()`).
   */
  connect(): Promise<ConnectedFrame> {
    const promise = new Promise<ConnectedFrame>((resolve, reject) => {
      if (this.state === "connected" && this.connection) resolve(this.connection);
      else this.connectWaiters.push({ resolve, reject });
    });
    // Callers that only listen to events need not catch this.
    promise.catch(() => {});
    if (this.state === "idle" || this.state === "closed") {
      this.state = "connecting";
      this.attempt = 0;
      this.authRetried = false;
      void this.open(false);
    }
    return promise;
  }

  /**
   * Subscribes to `channels` (one name or several) and calls
   * `options.onMessage` for their messages. Works before `connect()` too:
   * channels are sent once connected, and again after every reconnect.
   */
  subscribe<T = unknown>(channels: string | string[], options: SubscribeOptions<T> = {}): Subscription {
    const names = [...new Set(typeof channels === "string" ? [channels] : channels)];
    let resolve!: (infos: SubscribedInfo[]) => void;
    let reject!: (error: Error) => void;
    const ready = new Promise<SubscribedInfo[]>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    ready.catch(() => {});
    const record: SubscriptionRecord = {
      public: { channels: names, ready, unsubscribe: () => this.removeSubscription(record) },
      options: options as SubscribeOptions<never>,
      waiting: new Set(names),
      acks: [],
      resolve,
      reject,
    };
    const fresh = this.subs.add(names, record);
    // Channels another subscription already holds are acknowledged already.
    for (const channel of names) {
      if (!fresh.includes(channel) && this.subs.isAcked(channel)) record.waiting.delete(channel);
    }
    if (record.waiting.size === 0) resolve(record.acks);
    if (fresh.length > 0 && this.state === "connected") this.sendSubscribes(fresh, false);
    return record.public;
  }

  /** Unsubscribes `channels` for every subscription that holds them. */
  unsubscribe(channels: string | string[]): void {
    const names = typeof channels === "string" ? [channels] : channels;
    const gone: string[] = [];
    for (const channel of names) {
      if (this.subs.has(channel)) {
        this.subs.drop(channel);
        gone.push(channel);
      }
    }
    this.sendUnsubscribe(gone);
  }

  /** The channels subscribed now (as the application asked for them). */
  channels(): string[] {
    return this.subs.names();
  }

  /** A channel's cursor, when the server keeps stream state. */
  cursor(channel: string): string | undefined {
    return this.subs.cursor(channel);
  }

  /** Sends a JSON `ping` and resolves with the round trip in ms. */
  ping(): Promise<number> {
    return new Promise((resolve, reject) => {
      if (!this.socket || this.state !== "connected") {
        reject(new WsRealtimeError("closed", "not connected"));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { kind: "ping", sentAt: Date.now(), resolve });
      this.send({ type: "ping", id });
    });
  }

  /** Closes the connection and stops reconnecting. */
  close(): void {
    const wasActive = this.state !== "closed" && this.state !== "idle";
    this.state = "closed";
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.stopHeartbeat();
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.onerror = null;
      try {
        socket.close(1000, "client closed");
      } catch {
        // Closing a socket that is still connecting throws in some runtimes.
      }
    }
    this.failConnectWaiters(new WsRealtimeError("closed", "close() was called", { fatal: true }));
    if (wasActive) {
      this.emit("disconnected", { code: 1000, reason: "client closed", willReconnect: false, attempt: this.attempt });
    }
  }

  // --- connecting ---------------------------------------------------------

  /** Whether `close()` was called or the client gave up (read through a method so checks after an `await` are not narrowed away). */
  private isClosed(): boolean {
    return this.state === "closed";
  }

  /** One connection attempt; `freshToken` asks `getToken` first. */
  private async open(freshToken: boolean): Promise<void> {
    this.timer = undefined;
    if (this.isClosed()) return;
    this.state = "connecting";
    let WebSocketImpl: WebSocketConstructor;
    try {
      WebSocketImpl = await resolveWebSocket(this.options.WebSocket);
      if (freshToken || !this.token) this.token = await this.fetchToken();
    } catch (error) {
      const failure =
        error instanceof WsRealtimeError
          ? error
          : new WsRealtimeError("get_token_failed", `getToken failed: ${String(error)}`);
      if (failure.fatal) return this.stop(failure);
      this.emit("error", failure);
      return this.retry(1006, failure.message);
    }
    if (this.isClosed()) return;
    let socket: SocketLike;
    try {
      socket = new WebSocketImpl(this.urlWithToken());
    } catch (error) {
      // A malformed URL: no retry can fix it.
      return this.stop(new WsRealtimeError("closed", `cannot open ${this.url}: ${String(error)}`, { fatal: true }));
    }
    this.socket = socket;
    this.opened = false;
    socket.onmessage = (event) => this.receive(event.data);
    socket.onerror = () => {
      // A close event always follows; it decides what to do.
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      void this.closed(event.code, event.reason ?? "");
    };
  }

  /** Asks `getToken` for a token. */
  private async fetchToken(): Promise<string> {
    const getToken = this.options.getToken;
    if (!getToken) {
      if (this.token) return this.token;
      throw new WsRealtimeError("get_token_failed", "no token and no getToken", { fatal: true });
    }
    const token = await getToken();
    if (typeof token !== "string" || token === "") {
      throw new WsRealtimeError("get_token_failed", "getToken returned no token");
    }
    return token;
  }

  /** The URL with `?token=` (browsers cannot send an Authorization header). */
  private urlWithToken(): string {
    const separator = this.url.includes("?") ? "&" : "?";
    return `${this.url}${separator}token=${encodeURIComponent(this.token ?? "")}`;
  }

  /** The socket closed: decide whether, when and how to try again. */
  private async closed(code: number, reason: string): Promise<void> {
    if (this.isClosed()) return;
    const opened = this.opened;
    this.opened = false;
    this.stopHeartbeat();
    this.subs.connectionLost();
    // Requests of a lost connection get no answer; subscribes are redone on reconnect.
    this.pending.clear();
    // A failed handshake: browsers hide the HTTP status, so ask for it.
    const refusal = !opened && this.options.probeRefusals ? await probeRefusal(this.urlWithToken()) : undefined;
    if (this.isClosed()) return;
    const next = nextStep({
      opened,
      code,
      reason,
      refusal,
      canRenewToken: this.options.getToken !== undefined,
      authRetried: this.authRetried,
    });
    switch (next.kind) {
      case "stop":
        return this.stop(next.error, code, opened ? reason : next.error.message);
      case "backoff":
        return this.retry(code, next.reason);
      case "now":
        if (refusal?.status === 401) this.authRetried = true;
        this.emit("disconnected", { code, reason: next.reason, willReconnect: true, delayMs: 0, attempt: this.attempt });
        return void this.open(next.freshToken);
    }
  }

  /** Waits the back-off, then tries again. */
  private retry(code: number, reason: string): void {
    if (this.isClosed()) return;
    const delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
    this.emit("disconnected", { code, reason, willReconnect: true, delayMs: delay, attempt: this.attempt });
    this.attempt += 1;
    this.state = "waiting";
    this.timer = setTimeout(() => void this.open(false), delay);
  }

  /** Gives up for good with `error`. */
  private stop(error: WsRealtimeError, code = 1006, reason = error.message): void {
    this.state = "closed";
    this.emit("disconnected", { code, reason, willReconnect: false, attempt: this.attempt });
    this.emit("error", error);
    this.failConnectWaiters(error);
  }

  /** Rejects the promises `connect()` handed out. */
  private failConnectWaiters(error: Error): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  // --- frames -------------------------------------------------------------

  /** One WebSocket frame: a JSON object or a JSON array of them (a batch). */
  private receive(raw: unknown): void {
    this.stats.frames += 1;
    let parsed: unknown;
    try {
      parsed = JSON.parse(typeof raw === "string" ? raw : String(raw));
    } catch {
      this.emit("error", new WsRealtimeError("bad_frame", `a frame was not JSON: ${String(raw).slice(0, 80)}`));
      return;
    }
    if (Array.isArray(parsed)) {
      this.stats.batches += 1;
      for (const frame of parsed) this.dispatch(frame as ServerFrame);
    } else {
      this.dispatch(parsed as ServerFrame);
    }
  }

  /** Acts on one server frame. */
  private dispatch(frame: ServerFrame): void {
    switch (frame.type) {
      case "connected":
        return this.onConnected(frame);
      case "message": {
        this.stats.messages += 1;
        this.subs.observe(frame);
        const message = toMessage(frame);
        for (const record of this.subs.subscribers(frame.channel)) record.options.onMessage?.(message as never);
        this.emit("message", message);
        return;
      }
      case "subscribed":
        return this.onSubscribed(frame);
      case "unsubscribed":
        return this.onUnsubscribed(frame);
      case "error":
        return this.onError(frame.id, frame.code, frame.message);
      case "pong": {
        const pending = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
        if (pending?.kind === "ping") {
          this.pending.delete(frame.id!);
          pending.resolve(Date.now() - pending.sentAt);
        }
        return;
      }
      case "ping":
        return this.send({ type: "pong" });
      case "refresh_required":
        return void this.refresh();
      case "refreshed":
        if (frame.id !== undefined) this.pending.delete(frame.id);
        this.emit("refreshed", { expiresAt: frame.expiresAt });
        return;
      default:
        // A frame kind from a newer server: ignore it.
        return;
    }
  }

  private onConnected(frame: ConnectedFrame): void {
    this.opened = true;
    this.state = "connected";
    this.connection = frame;
    this.attempt = 0;
    this.authRetried = false;
    this.stats.connects += 1;
    const reconnect = this.everConnected;
    this.everConnected = true;
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.resolve(frame);
    this.startHeartbeat();
    this.emit("connected", { frame, reconnect });
    const channels = this.subs.names();
    if (channels.length > 0) this.sendSubscribes(channels, reconnect);
  }

  private onSubscribed(frame: SubscribedFrame): void {
    const pending = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (pending?.kind !== "subscribe") return;
    this.pending.delete(frame.id!);
    for (const channel of pending.channels) {
      if (!this.subs.has(channel)) continue;
      const asked = channel in pending.asked;
      const recovered = asked ? frame.recovered?.[channel] : undefined;
      const position = frame.positions?.[channel];
      this.subs.acked(channel, position, recovered);
      const info: SubscribedInfo = { channel, resubscribed: pending.resubscribe };
      if (recovered !== undefined) info.recovered = recovered;
      if (position !== undefined) info.position = position;
      const rate = frame.maxRate?.[channel];
      if (rate !== undefined) info.maxRate = rate;
      for (const record of this.subs.subscribers(channel)) {
        record.options.onSubscribed?.(info);
        if (record.waiting.delete(channel)) {
          record.acks.push(info);
          if (record.waiting.size === 0) record.resolve(record.acks);
        }
      }
      this.emit("subscribed", info);
    }
  }

  private onUnsubscribed(frame: UnsubscribedFrame): void {
    if (frame.id !== undefined && this.pending.get(frame.id)?.kind === "unsubscribe") {
      // The ack of our own unsubscribe: the channels are already forgotten.
      this.pending.delete(frame.id);
      return;
    }
    // The server dropped channels by itself (e.g. a refreshed token no longer allows them).
    for (const channel of frame.channels) {
      for (const record of this.subs.drop(channel)) record.options.onUnsubscribed?.(channel, frame.reason);
      this.emit("unsubscribed", { channel, reason: frame.reason });
    }
  }

  private onError(id: number | string | undefined, code: string, message: string): void {
    const pending = id !== undefined ? this.pending.get(id) : undefined;
    if (id !== undefined) this.pending.delete(id);
    const error = new WsRealtimeError("server_error", `${code}: ${message}`, { serverCode: code });
    if (pending?.kind === "subscribe") {
      if (code === "bad_position" && Object.keys(pending.asked).length > 0) {
        // The server cannot read a cursor we kept (e.g. it was upgraded in
        // between): subscribe without one; the ack reports no recovery.
        for (const channel of Object.keys(pending.asked)) this.subs.forgetCursor(channel);
        this.emit("error", error);
        this.sendSubscribes(pending.channels, pending.resubscribe);
        return;
      }
      // Subscribe is all or nothing: every channel of the request failed.
      for (const channel of pending.channels) {
        for (const record of this.subs.drop(channel)) {
          // Its other channels go too, as the application never got this subscription.
          this.sendUnsubscribe(this.subs.remove(record));
          record.reject(error);
        }
      }
    }
    this.emit("error", error);
  }

  /** Answers `refresh_required` with a token from `getToken`. */
  private async refresh(): Promise<void> {
    if (!this.options.getToken) {
      this.emit(
        "error",
        new WsRealtimeError("refresh_unavailable", "the server asked for a token refresh, but there is no getToken"),
      );
      return;
    }
    try {
      this.token = await this.fetchToken();
    } catch (error) {
      this.emit("error", new WsRealtimeError("get_token_failed", `getToken failed: ${String(error)}`));
      return;
    }
    const id = this.nextId++;
    this.pending.set(id, { kind: "refresh" });
    this.send({ type: "refresh", token: this.token, id });
  }

  // --- liveness -----------------------------------------------------------

  private startHeartbeat(): void {
    const every = this.options.pingIntervalMs ?? 0;
    if (every <= 0) return;
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (this.pongDue) {
        // No answer for a whole interval: the network is gone even if the
        // socket does not know yet. Drop it and reconnect.
        const socket = this.socket;
        this.socket = undefined;
        if (socket) {
          socket.onclose = null;
          socket.onmessage = null;
          try {
            socket.close(4000, "no pong");
          } catch {
            // Already closing.
          }
        }
        void this.closed(1006, `no pong within ${every} ms`);
        return;
      }
      const id = this.nextId++;
      this.pongDue = true;
      this.pending.set(id, { kind: "ping", sentAt: Date.now(), resolve: () => (this.pongDue = false) });
      this.send({ type: "ping", id });
    }, every);
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.pongDue = false;
  }

  // --- requests -----------------------------------------------------------

  private sendSubscribes(channels: string[], resubscribe: boolean): void {
    const requests = this.subs.requests(channels, this.options.recover !== false, () => this.nextId++);
    for (const request of requests) {
      this.pending.set(request.id, {
        kind: "subscribe",
        channels: request.channels,
        resubscribe,
        asked: request.since ?? {},
      });
      this.send(request);
    }
  }

  private sendUnsubscribe(channels: string[]): void {
    if (channels.length === 0 || this.state !== "connected") return;
    const id = this.nextId++;
    this.pending.set(id, { kind: "unsubscribe" });
    this.send({ type: "unsubscribe", channels, id });
  }

  private removeSubscription(record: SubscriptionRecord): void {
    this.sendUnsubscribe(this.subs.remove(record));
  }

  private send(frame: object): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(JSON.stringify(frame));
  }
}

export type { Off };
