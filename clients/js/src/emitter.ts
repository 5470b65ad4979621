/**
 * A tiny typed event emitter: no dependency, works the same in browsers and
 * Node, and (unlike Node's EventEmitter) an `error` event nobody listens to
 * does not throw.
 */

/** Removes the listener it was returned for. */
export type Off = () => void;

/** An emitter whose event names and payloads are fixed by `Events`. */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  /** Listeners per event; a Set so the same function is registered once. */
  private readonly listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Calls `listener` on every `event`; returns a function that stops it. */
  on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Off {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (payload: never) => void);
    return () => this.off(event, listener);
  }

  /** Calls `listener` on the next `event` only. */
  once<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Off {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Stops calling `listener` on `event`. */
  off<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): void {
    this.listeners.get(event)?.delete(listener as (payload: never) => void);
  }

  /** Calls every listener of `event`; one that throws does not stop the others. */
  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (payload: Events[K]) => void)(payload);
      } catch (error) {
        // A broken listener must not break the connection; surface it later.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
