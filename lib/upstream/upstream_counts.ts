/**
 * The contract between `LeastConnPool` and the places its active connection counts
 * can live: the {@linkcode UpstreamCounts} interface that the memory, shared-memory
 * and Redis stores implement.
 *
 * @module
 */

/**
 * Where active connection counts live, keyed by upstream address.
 *
 * The pool calls {@linkcode UpstreamCounts.add} with `+1` when it hands out a lease and
 * with `-1` exactly once when that lease ends, and reads {@linkcode UpstreamCounts.get}
 * for every upstream it considers on a pick. Both are synchronous and on the hot path.
 * The default is `MemoryUpstreamCounts`; a store shared between workers
 * (`SharedArrayBuffer` and `Atomics`) or an eventually consistent remote tally can
 * implement the same two methods, so that several pools balance on the same counts.
 *
 * Every store keeps these promises: a count never goes below zero (an `add` that would
 * take it there, or whose `delta` is not an integer, throws a `RangeError` and changes
 * nothing); `add` returns the count as `get` then reads it; an address never counted
 * reads 0; addresses are counted apart. A store whose addresses have fixed slots (the
 * shared-memory one) may throw for an address it has no slot for.
 */
export interface UpstreamCounts {
  /**
   * Changes the count of `address` by `delta`.
   *
   * @param address The upstream, `host:port` as configured.
   * @param delta `+1` when a connection starts, `-1` when it ends.
   * @returns The new count.
   */
  add(address: string, delta: number): number;
  /**
   * Reads the count of `address`.
   *
   * @param address The upstream, `host:port` as configured.
   * @returns The active connections; 0 for an address never counted.
   */
  get(address: string): number;
}
