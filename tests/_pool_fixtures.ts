/**
 * Helpers of the `LeastConnPool` tests: short-lived picks, a seeded PRNG, the active
 * counts of a pool, and a scripted dialer.
 *
 * @module
 */
import type { HostPort } from "../lib/core/address.ts";
import type { LeastConnPool } from "../lib/upstream/least_conn_pool.ts";

/** Acquires and releases at once, `n` times, returning the addresses picked. */
export function shortLivedPicks(pool: LeastConnPool, n: number): string[] {
  const picks: string[] = [];
  for (let i = 0; i < n; i++) {
    using lease = pool.acquire();
    picks.push(lease.address);
  }
  return picks;
}

/** Mulberry32: a small seeded PRNG so stress runs are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A refused connection, as `node:net` reports it. */
export function refusedError(): Error {
  return Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
}

/** What a scripted dial does. */
export type Behaviour = "ok" | "refuse" | "error" | "hang";

/** What a scripted dial connects: the address it dialled. */
export interface FakeSocket {
  address: string;
}

/**
 * A dialer that follows a per-address script and honours its signal like `dialTcp`.
 * Unknown addresses connect.
 */
export class FakeDialer {
  readonly calls: string[] = [];
  readonly script = new Map<string, Behaviour>();
  /** Dials pending on "hang", by address. */
  readonly pending = new Map<string, (socket: FakeSocket) => void>();

  readonly dial = (address: HostPort, signal: AbortSignal): Promise<FakeSocket> => {
    const key = `${address.hostname}:${address.port}`;
    this.calls.push(key);
    if (signal.aborted) return Promise.reject(signal.reason);
    switch (this.script.get(key) ?? "ok") {
      case "ok":
        return Promise.resolve({ address: key });
      case "refuse":
        return Promise.reject(refusedError());
      case "error":
        return Promise.reject(new Error("connect EHOSTUNREACH"));
      case "hang":
        return new Promise((resolve, reject) => {
          const onAbort = () => {
            this.pending.delete(key);
            reject(signal.reason);
          };
          signal.addEventListener("abort", onAbort, { once: true });
          this.pending.set(key, (socket) => {
            signal.removeEventListener("abort", onAbort);
            this.pending.delete(key);
            resolve(socket);
          });
        });
    }
  };
}

/** The active count of each upstream of a pool. */
export function active(pool: LeastConnPool): Record<string, number> {
  return Object.fromEntries(pool.snapshot().map((s) => [s.address, s.active]));
}
