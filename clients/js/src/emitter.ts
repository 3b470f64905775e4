/**
 * A small typed event emitter that works the same in browsers, Node and mini-programs.
 * A listener that throws does not disturb the client: the exception is re-thrown asynchronously.
 */
export type Listener<A extends unknown[]> = (...args: A) => void;

export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never[]>>>();

  /** Receives what a listener threw; default: re-thrown asynchronously (reported, not swallowed). */
  onListenerError: (err: unknown) => void = (err) => {
    setTimeout(() => {
      throw err;
    }, 0);
  };

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as unknown as Listener<never[]>);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, ((...args: Events[K]) => {
      off();
      listener(...args);
    }) as Listener<Events[K]>);
    return off;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(listener as unknown as Listener<never[]>);
  }

  /** Number of listeners of one event (mostly for tests). */
  listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as unknown as Listener<Events[K]>)(...args);
      } catch (err) {
        this.onListenerError(err);
      }
    }
  }
}
