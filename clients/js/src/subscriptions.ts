/**
 * What the application subscribed to, kept across reconnects: the channels,
 * the options each was asked with, the handlers to call, and each channel's
 * cursor. After a reconnect the client turns this back into `subscribe`
 * requests ({@link Subscriptions.resubscribeRequests}).
 */

import { advanceCursor } from "./cursor.js";
import type { MessageFrame, SubscribeRequest } from "./frames.js";

/** A message as handed to the application. */
export interface Message<T = unknown> {
  /** The channel it came on. */
  channel: string;
  /** The JSON payload (or a string for UTF-8 text that is not JSON). */
  data: T;
  /** The payload, base64-encoded, when it was neither JSON nor UTF-8 text. */
  b64data?: string;
  /** The stream position `<stream>:<offset>`, when the server gave one. */
  pos?: string;
  /** True for messages replayed as snapshot or history rather than live. */
  snapshot: boolean;
}

/** What happened when a channel was (re)subscribed. */
export interface SubscribedInfo {
  /** The channel. */
  channel: string;
  /** True when this ack followed a reconnect. */
  resubscribed: boolean;
  /**
   * For a resubscribe that asked for recovery (`since`): true when the server
   * sends every message missed while disconnected, false when it cannot (the
   * application should reload its state). Undefined when recovery was not
   * asked or the server does not support it.
   */
  recovered?: boolean;
  /** The channel's cursor as the server reported it. */
  position?: string;
  /** The rate the server conflates this channel to, when it does. */
  maxRate?: number;
}

/** Options of {@link WsRealtime.subscribe}. */
export interface SubscribeOptions<T = unknown> {
  /** Called for every message on the channels. */
  onMessage?: (message: Message<T>) => void;
  /** Called after each (re)subscribe ack, per channel. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /** Called when the server drops a channel (e.g. `reason: "forbidden"` after a token refresh). */
  onUnsubscribed?: (channel: string, reason?: string) => void;
  /** Ask the server for the channel's latest state first (servers with stream state). */
  snapshot?: boolean;
  /** Ask for the last N messages first (servers with stream state). */
  history?: number;
  /** Ask the server to conflate the channel to at most N messages per second. */
  maxRate?: number;
}

/** One call of `subscribe`: its channels and handlers. */
export interface Subscription {
  /** The channels of this subscription. */
  readonly channels: readonly string[];
  /** Resolves once every channel was acknowledged; rejects if the server refused one. */
  readonly ready: Promise<SubscribedInfo[]>;
  /** Removes these handlers; channels no other subscription uses are unsubscribed. */
  unsubscribe(): void;
}

/** A subscription's private half. */
export interface SubscriptionRecord {
  /** The public object. */
  readonly public: Subscription;
  /** Handlers and options. */
  readonly options: SubscribeOptions<never>;
  /** Channels not acknowledged yet: `ready` resolves when this empties. */
  readonly waiting: Set<string>;
  /** Acks seen so far, for `ready`. */
  readonly acks: SubscribedInfo[];
  /** Settles `ready`. */
  readonly resolve: (infos: SubscribedInfo[]) => void;
  /** Settles `ready` with an error. */
  readonly reject: (error: Error) => void;
}

/** One channel's state. */
interface ChannelState {
  /** Options sent with its subscribe (the first subscription's). */
  readonly request: { snapshot?: boolean; history?: number; maxRate?: number };
  /** Subscriptions that want this channel. */
  readonly subscribers: Set<SubscriptionRecord>;
  /** Where the application has read up to; sent as `since` after a reconnect. */
  cursor?: string;
  /** Whether the server acknowledged the channel on the current connection. */
  acked: boolean;
}

/** The channel registry. */
export class Subscriptions {
  /** Channels by name. */
  private readonly channels = new Map<string, ChannelState>();

  /** Adds `record` for `channels`; returns the channels that are new (need a subscribe). */
  add(channels: readonly string[], record: SubscriptionRecord): string[] {
    const fresh: string[] = [];
    for (const channel of channels) {
      let state = this.channels.get(channel);
      if (!state) {
        const { snapshot, history, maxRate } = record.options;
        state = { request: { snapshot, history, maxRate }, subscribers: new Set(), acked: false };
        this.channels.set(channel, state);
        fresh.push(channel);
      }
      state.subscribers.add(record);
    }
    return fresh;
  }

  /** Removes `record`; returns the channels nobody wants any more. */
  remove(record: SubscriptionRecord): string[] {
    const gone: string[] = [];
    for (const channel of record.public.channels) {
      const state = this.channels.get(channel);
      if (!state) continue;
      state.subscribers.delete(record);
      if (state.subscribers.size === 0) {
        this.channels.delete(channel);
        gone.push(channel);
      }
    }
    return gone;
  }

  /** Drops `channel` entirely (the server refused or removed it). */
  drop(channel: string): SubscriptionRecord[] {
    const state = this.channels.get(channel);
    this.channels.delete(channel);
    return state ? [...state.subscribers] : [];
  }

  /** Whether `channel` is wanted. */
  has(channel: string): boolean {
    return this.channels.has(channel);
  }

  /** Whether the server acknowledged `channel` on this connection. */
  isAcked(channel: string): boolean {
    return this.channels.get(channel)?.acked ?? false;
  }

  /** The channels wanted now. */
  names(): string[] {
    return [...this.channels.keys()];
  }

  /** The subscriptions of `channel`. */
  subscribers(channel: string): SubscriptionRecord[] {
    return [...(this.channels.get(channel)?.subscribers ?? [])];
  }

  /** The cursor of `channel`, if any. */
  cursor(channel: string): string | undefined {
    return this.channels.get(channel)?.cursor;
  }

  /** Forgets the cursor of `channel` (the server could not read it). */
  forgetCursor(channel: string): void {
    const state = this.channels.get(channel);
    if (state) state.cursor = undefined;
  }

  /** Marks every channel as not yet acknowledged: the connection was lost. */
  connectionLost(): void {
    for (const state of this.channels.values()) state.acked = false;
  }

  /**
   * Records an ack. A channel that recovered keeps its own cursor (the
   * replayed messages advance it); otherwise the server's position is the
   * starting point.
   */
  acked(channel: string, position: string | undefined, recovered: boolean | undefined): void {
    const state = this.channels.get(channel);
    if (!state) return;
    state.acked = true;
    if (position !== undefined && recovered !== true) state.cursor = position;
  }

  /** Advances the cursor of a live message's channel. */
  observe(frame: MessageFrame): void {
    if (frame.snapshot || !frame.pos) return;
    const state = this.channels.get(frame.channel);
    if (!state || state.cursor === undefined) {
      // Only track cursors once the server said it has them (an ack with
      // `positions`): an old server's pos is not a resumable cursor.
      return;
    }
    state.cursor = advanceCursor(state.cursor, frame.pos);
  }

  /**
   * `subscribe` requests for `channels` (all wanted ones after a reconnect),
   * one per distinct option set; channels with a cursor are asked `since`
   * it when `recover` is on. `nextId` numbers the requests.
   */
  requests(channels: readonly string[], recover: boolean, nextId: () => number): SubscribeRequest[] {
    const groups = new Map<string, { channels: string[]; request: ChannelState["request"] }>();
    for (const channel of channels) {
      const state = this.channels.get(channel);
      if (!state) continue;
      const resume = recover && state.cursor !== undefined;
      // A channel that resumes from a cursor needs no snapshot or history.
      const request = resume ? { maxRate: state.request.maxRate } : state.request;
      const key = JSON.stringify([request.snapshot, request.history, request.maxRate]);
      let group = groups.get(key);
      if (!group) {
        group = { channels: [], request };
        groups.set(key, group);
      }
      group.channels.push(channel);
    }
    const out: SubscribeRequest[] = [];
    for (const { channels: names, request } of groups.values()) {
      const frame: SubscribeRequest = { type: "subscribe", id: nextId(), channels: names };
      const since: Record<string, string> = {};
      for (const channel of names) {
        const cursor = this.channels.get(channel)?.cursor;
        if (recover && cursor !== undefined) since[channel] = cursor;
      }
      if (Object.keys(since).length > 0) frame.since = since;
      if (request.snapshot) frame.snapshot = true;
      if (request.history !== undefined) frame.history = request.history;
      if (request.maxRate !== undefined) frame.maxRate = request.maxRate;
      out.push(frame);
    }
    return out;
  }
}

/** A {@link Message} from a `message` frame. */
export function toMessage(frame: MessageFrame): Message {
  const message: Message = {
    channel: frame.channel,
    data: frame.data,
    snapshot: frame.snapshot === true,
  };
  if (frame.pos !== undefined) message.pos = frame.pos;
  if (frame.b64data !== undefined) message.b64data = frame.b64data;
  return message;
}
