/**
 * Per-client connection limits: a cap on concurrent connections and an optional
 * connection rate, keyed by the configured client name of an authenticated mTLS peer.
 *
 * State lives behind a {@linkcode LimiterStore} (`store.ts`); the default
 * {@linkcode MemoryLimiterStore} keeps it in this process, and a shared store
 * (shared memory between Workers, Redis between instances) can enforce the same
 * limits across threads, processes or instances.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";
import { MemoryLimiterStore } from "./memory_store.ts";
import type {
  AcquireRequest,
  Admission,
  ClientLimitKind,
  ClientLimits,
  LimiterStore,
  ScopeLimits,
} from "./store.ts";

const logger = getLogger(["mtlb", "limiter"]);

/**
 * Where a limit that refused applies: the client over all its connections
 * (`"client"`), the client within one group (`"client_in_group"`), or a group over all
 * its clients (`"group"`).
 */
export type LimitScope = "client" | "client_in_group" | "group";

/** Options for {@linkcode ClientLimitError}. */
export interface ClientLimitErrorOptions extends ErrorOptions {
  /** Which limit refused. */
  kind: ClientLimitKind;
  /**
   * Where the limit applies.
   *
   * @default {"client"}
   */
  scope?: LimitScope;
  /**
   * The group, for a limit within a group.
   *
   * @default {undefined}
   */
  group?: string;
  /** The concurrent cap, or the rate's `count`. */
  limit: number;
  /**
   * For a rate refusal, the rate's window in milliseconds.
   *
   * @default {undefined}
   */
  windowMs?: number;
  /**
   * For a rate refusal, milliseconds until a token is available.
   *
   * @default {undefined}
   */
  retryAfterMs?: number;
}

/**
 * Thrown (as a rejection) by {@linkcode ClientLimiter.acquire} when a client is over
 * its concurrent cap or its connection rate.
 *
 * @example Usage
 * ```ts
 * import { ClientLimitError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const error = new ClientLimitError("app", {
 *   kind: "rate",
 *   limit: 100,
 *   windowMs: 60_000,
 *   retryAfterMs: 600,
 * });
 * assert.equal(error.name, "ClientLimitError");
 * assert.equal(
 *   error.message,
 *   'Cannot accept connection: client "app" is over its rate limit of 100 connections per 1m, retry after 600ms',
 * );
 * ```
 */
export class ClientLimitError extends Error {
  /** Which limit refused. */
  readonly kind: ClientLimitKind;
  /** Where the limit applies. */
  readonly scope: LimitScope;
  /** The group of a limit within a group; otherwise `undefined`. */
  readonly group: string | undefined;
  /** The client name. */
  readonly client: string;
  /** The concurrent cap, or the rate's `count`. */
  readonly limit: number;
  /** For a rate refusal, the rate's window in milliseconds; otherwise `undefined`. */
  readonly windowMs: number | undefined;
  /** For a rate refusal, milliseconds until a token is available; otherwise `undefined`. */
  readonly retryAfterMs: number | undefined;

  /**
   * Creates the error and its message.
   *
   * @param client The client name.
   * @param options Which limit refused, and its details.
   */
  constructor(client: string, options: ClientLimitErrorOptions) {
    const { kind, limit, windowMs, retryAfterMs, group } = options;
    const scope = options.scope ?? "client";
    const who = `Cannot accept connection: ${
      scope === "group" ? `group ${JSON.stringify(group)}` : `client ${JSON.stringify(client)}`
    }`;
    const where = scope === "client_in_group" ? ` in group ${JSON.stringify(group)}` : "";
    const connections = limit === 1 ? "connection" : "connections";
    super(
      kind === "concurrency"
        ? `${who} is at its limit of ${limit} concurrent ${connections}${where}`
        : `${who} is over its rate limit of ${limit} ${connections} per ${
          windowMs === undefined ? "window" : formatDuration(windowMs)
        }${where}${
          retryAfterMs === undefined ? "" : `, retry after ${formatDuration(retryAfterMs)}`
        }`,
      options,
    );
    this.name = "ClientLimitError";
    this.kind = kind;
    this.scope = scope;
    this.group = group;
    this.client = client;
    this.limit = limit;
    this.windowMs = windowMs;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A held connection slot, given back once on dispose (`using lease = ...`). */
export interface ClientLease extends Disposable {
  /** The client the slot belongs to. */
  readonly client: string;
  /**
   * The group the slot counts in, when it was acquired with one.
   *
   * @default {undefined}
   */
  readonly group?: string | undefined;
  /**
   * Milliseconds the connection waited in the queue for its rate token (0 when its
   * token was there at once).
   *
   * @default {0}
   */
  readonly queuedMs?: number;
}

/** The limits of one group a connection goes to, for {@linkcode ClientAcquireOptions}. */
export interface GroupLimits {
  /** The group's name: a non-empty string. */
  readonly name: string;
  /**
   * Limits over all clients of the group together (`[groups.NAME] max_connections`);
   * absent for none.
   *
   * @default {undefined}
   */
  readonly total?: ClientLimits;
  /**
   * This client's limits within the group (`[clients.NAME.per_group.GROUP]`), which
   * apply besides its overall limits; absent for none.
   *
   * @default {undefined}
   */
  readonly client?: ClientLimits;
}

/** Options of one {@linkcode ClientLimiter.acquire} call. */
export interface ClientAcquireOptions {
  /**
   * The client's overall limits, instead of `limitsFor(client)` or the default.
   *
   * @default {undefined}
   */
  limits?: ClientLimits;
  /**
   * The group the connection goes to, with the limits there.
   *
   * @default {undefined}
   */
  group?: GroupLimits;
  /**
   * Milliseconds a connection over a rate limit may wait for its token instead of
   * being refused (`on_rate_limit = "queue"`, `queue_timeout`). The connection holds
   * its concurrency slots while it waits; one whose token is due later than this is
   * refused at once (the wait is known on arrival: tokens are reserved in arrival
   * order). 0 refuses at once.
   *
   * @default {0}
   */
  queueTimeout?: number;
  /**
   * Ends a wait in the queue: the slots are given back and `acquire` rejects with
   * the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
}

/**
 * The key a group's own state is kept under in a {@linkcode LimiterStore} (its total
 * over all clients): stores with fixed slots (`SharedMemoryLimiterStore`) need one
 * for each group with limits.
 *
 * @example Usage
 * ```ts
 * import { groupScopeKey } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * assert.equal(groupScopeKey("cache"), "\u001fcache");
 * ```
 *
 * @param group The group's name.
 * @returns Its key: the unit separator (U+001F) then the name.
 */
export function groupScopeKey(group: string): string {
  return SEPARATOR + group;
}

/**
 * The key of a client's state within one group in a {@linkcode LimiterStore}.
 *
 * @example Usage
 * ```ts
 * import { clientInGroupScopeKey } from "@mtlb/mtlb/limiter";
 * import assert from "node:assert/strict";
 *
 * assert.equal(clientInGroupScopeKey("alice", "cache"), "alice\u001fcache");
 * ```
 *
 * @param client The client's name.
 * @param group The group's name.
 * @returns Its key: the client, the unit separator (U+001F), the group.
 */
export function clientInGroupScopeKey(client: string, group: string): string {
  return client + SEPARATOR + group;
}

/** Separates the parts of a scope key; names may not contain it. */
const SEPARATOR = "\u001f";

/** Options for {@linkcode ClientLimiter}. */
export interface ClientLimiterOptions {
  /**
   * Limits for a client that {@linkcode ClientLimiterOptions.limitsFor} has none for.
   *
   * @default {{ concurrent: 10 }}
   */
  limits?: ClientLimits;
  /**
   * Looks up one client's limits; `undefined` means
   * {@linkcode ClientLimiterOptions.limits}. Called on every `acquire` without
   * per-call limits, so it should be a cheap lookup.
   *
   * @default {undefined}
   */
  limitsFor?: (client: string) => ClientLimits | undefined;
  /**
   * Where state lives.
   *
   * @default {new MemoryLimiterStore()}
   */
  store?: LimiterStore;
  /**
   * The time source for rate limits.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

const DEFAULT_LIMITS: ClientLimits = Object.freeze({ concurrent: 10 });

/** Gives `_Lease` access to `ClientLimiter`'s private release, without a closure per lease. */
let releaseSlot: (limiter: ClientLimiter, lease: _Lease) => void;

class _Lease implements ClientLease {
  readonly client: string;
  readonly group: string | undefined;
  /** The store keys of the scopes it holds a slot in. */
  readonly keys: readonly string[];
  queuedMs = 0;
  #limiter: ClientLimiter | undefined;

  constructor(limiter: ClientLimiter, client: string, group: string | undefined, keys: string[]) {
    this.#limiter = limiter;
    this.client = client;
    this.group = group;
    this.keys = keys;
  }

  [Symbol.dispose](): void {
    const limiter = this.#limiter;
    if (limiter === undefined) return;
    this.#limiter = undefined;
    releaseSlot(limiter, this);
  }
}

/**
 * Limits each client's concurrent connections (10 by default) and, optionally, the
 * rate at which it opens them. {@linkcode ClientLimiter.acquire} admits a connection
 * and returns a lease to dispose when the connection closes, or rejects with a
 * {@linkcode ClientLimitError}. Both limits are checked atomically together: a
 * refused connection spends no rate token and takes no slot.
 *
 * The rate limit is a token bucket (see `token_bucket.ts` for why).
 *
 * @example Usage
 * ```ts
 * import { ClientLimiter, ClientLimitError } from "@mtlb/mtlb";
 * import { FakeClock } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const clock = new FakeClock();
 * const limiter = new ClientLimiter({
 *   clock,
 *   limitsFor: (client) =>
 *     client === "batch" ? { concurrent: 1, rate: { count: 2, per: 1000 } } : undefined,
 * });
 *
 * {
 *   using _lease = await limiter.acquire("batch");
 *   assert.equal(limiter.active("batch"), 1);
 *   await assert.rejects(
 *     limiter.acquire("batch"),
 *     (e) => e instanceof ClientLimitError && e.kind === "concurrency",
 *   );
 * }
 * assert.equal(limiter.active("batch"), 0);
 *
 * using _second = await limiter.acquire("batch", { concurrent: 5, rate: { count: 2, per: 1000 } });
 * await assert.rejects(
 *   limiter.acquire("batch", { concurrent: 5, rate: { count: 2, per: 1000 } }),
 *   (e) => e instanceof ClientLimitError && e.kind === "rate" && e.retryAfterMs === 500,
 * );
 * ```
 */
export class ClientLimiter {
  static {
    releaseSlot = (limiter, lease) => limiter.#release(lease);
  }

  #store: LimiterStore;
  #clock: Clock;
  #limits: ClientLimits;
  #limitsFor: ((client: string) => ClientLimits | undefined) | undefined;
  #active = new Map<string, number>();
  #queued = new Map<string, number>();
  #queuedTotal = 0;
  #queueTimeouts = 0;
  #inGroup = new Map<string, number>();

  /**
   * Creates a limiter.
   *
   * @param options Default and per-client limits, the store and the clock.
   * @throws {RangeError} When `options.limits` is not valid.
   */
  constructor(options: ClientLimiterOptions = {}) {
    this.#limits = options.limits ?? DEFAULT_LIMITS;
    checkLimits(this.#limits);
    this.#limitsFor = options.limitsFor;
    this.#store = options.store ?? new MemoryLimiterStore();
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * Admits one connection for `client`, or refuses it. With a synchronous store (the
   * default) and no wait in the queue, admission happens before this returns and the
   * promise is already settled.
   *
   * With a group (`options.group`), the connection also counts in the group's total
   * and in the client's share of the group, and all limits are checked and taken
   * atomically together. With `options.queueTimeout`, a connection over a rate limit
   * waits for its token (holding its slots) when the token is due within the timeout.
   *
   * @example Queueing for a rate token
   * ```ts
   * import { ClientLimiter, FakeClock } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const clock = new FakeClock();
   * const limiter = new ClientLimiter({ clock, limits: { concurrent: 5, rate: { count: 1, per: 1000 } } });
   * using _first = await limiter.acquire("app", { queueTimeout: 5000 });
   * const second = limiter.acquire("app", { queueTimeout: 5000 });
   * assert.equal(limiter.queued(), 1);
   * clock.advance(1000); // its token is due
   * using lease = await second;
   * assert.equal(lease.queuedMs, 1000);
   * ```
   *
   * @example A client's cap within a group
   * ```ts
   * import { ClientLimiter, ClientLimitError } from "@mtlb/mtlb";
   * import assert from "node:assert/strict";
   *
   * const limiter = new ClientLimiter();
   * const cache = { name: "cache", total: { concurrent: 500 }, client: { concurrent: 1 } };
   * using _one = await limiter.acquire("alice", { group: cache });
   * await assert.rejects(
   *   limiter.acquire("alice", { group: cache }),
   *   (e) => e instanceof ClientLimitError && e.scope === "client_in_group",
   * );
   * using _other = await limiter.acquire("alice", { group: { name: "web" } });
   * assert.equal(limiter.activeInGroup("cache"), 1);
   * ```
   *
   * @param client The client name.
   * @param options Limits for this call (instead of `limitsFor(client)` or the
   * default), or the call's options: limits, group, queue timeout and signal.
   * @returns A lease to dispose when the connection closes.
   * @throws {ClientLimitError} When a cap is reached, or a rate token is not there (or
   * not due within `queueTimeout`) (as a rejection, like every error here).
   * @throws {TypeError} When `client` or the group's name is not a non-empty string
   * without U+001F.
   * @throws {RangeError} When the limits or the queue timeout are not valid.
   * @throws Whatever the store throws, or the signal's reason when it aborts a wait.
   */
  async acquire(
    client: string,
    options?: ClientLimits | ClientAcquireOptions,
  ): Promise<ClientLease> {
    checkName("client", client);
    const call: ClientAcquireOptions = options === undefined
      ? {}
      : "concurrent" in options
      ? { limits: options }
      : options;
    const resolved = call.limits ?? this.#limitsFor?.(client) ?? this.#limits;
    checkLimits(resolved);
    const queueTimeout = call.queueTimeout ?? 0;
    if (!(Number.isFinite(queueTimeout) && queueTimeout >= 0)) {
      throw new RangeError(
        `Cannot limit client: "queueTimeout" must be a non-negative number of milliseconds, received ${queueTimeout}`,
      );
    }
    const group = call.group;
    const scopes: ScopeLimits[] = [{ key: client, limits: resolved }];
    const kinds: LimitScope[] = ["client"];
    if (group !== undefined) {
      checkName("group", group.name);
      if (group.client !== undefined) {
        checkLimits(group.client);
        scopes.push({ key: clientInGroupScopeKey(client, group.name), limits: group.client });
        kinds.push("client_in_group");
      }
      if (group.total !== undefined) {
        checkLimits(group.total);
        scopes.push({ key: groupScopeKey(group.name), limits: group.total });
        kinds.push("group");
      }
    }
    const request: AcquireRequest = queueTimeout > 0
      ? { scopes, maxWaitMs: queueTimeout }
      : { scopes };
    call.signal?.throwIfAborted();
    const pending = this.#store.tryAcquire(request, this.#clock.now());
    const admission: Admission = pending instanceof Promise ? await pending : pending;
    if (!admission.admitted) {
      if (admission.kind === "rate" && queueTimeout > 0) this.#queueTimeouts++;
      const refusing = scopes[admission.scope] ?? scopes[0]!;
      const scope = kinds[admission.scope] ?? "client";
      throw new ClientLimitError(
        client,
        admission.kind === "rate"
          ? {
            kind: "rate",
            limit: admission.limit,
            windowMs: refusing.limits.rate?.per,
            retryAfterMs: admission.retryAfterMs,
            scope,
            ...(scope === "client" ? {} : { group: group!.name }),
          }
          : {
            kind: "concurrency",
            limit: admission.limit,
            scope,
            ...(scope === "client" ? {} : { group: group!.name }),
          },
      );
    }
    this.#active.set(client, (this.#active.get(client) ?? 0) + 1);
    if (group !== undefined) {
      this.#inGroup.set(group.name, (this.#inGroup.get(group.name) ?? 0) + 1);
    }
    const lease = new _Lease(this, client, group?.name, scopes.map((scope) => scope.key));
    const wait = admission.waitMs ?? 0;
    if (wait > 0) {
      try {
        await this.#wait(client, wait, call.signal);
      } catch (error) {
        lease[Symbol.dispose]();
        throw error;
      }
      lease.queuedMs = wait;
    }
    return lease;
  }

  /** Waits in the queue for `ms`, counted in {@linkcode ClientLimiter.queued}. */
  async #wait(client: string, ms: number, signal: AbortSignal | undefined): Promise<void> {
    this.#queued.set(client, (this.#queued.get(client) ?? 0) + 1);
    this.#queuedTotal++;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = this.#clock.setTimeout(resolve, ms);
    const onAbort = () => reject(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (signal?.aborted) onAbort();
      await promise;
    } finally {
      this.#clock.clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.#queuedTotal--;
      const queued = this.#queued.get(client)!;
      if (queued <= 1) this.#queued.delete(client);
      else this.#queued.set(client, queued - 1);
    }
  }

  /**
   * The connections this limiter has admitted for `client` and not yet released
   * (with a shared store, this instance's share), queued ones included.
   *
   * @param client The client name.
   * @returns The number of open leases.
   */
  active(client: string): number {
    return this.#active.get(client) ?? 0;
  }

  /**
   * The connections this limiter has admitted to `group` (with `options.group`) and
   * not yet released, over all clients and queued ones included; with a shared store,
   * this instance's share.
   *
   * @param group The group name.
   * @returns The number of open leases in the group.
   */
  activeInGroup(group: string): number {
    return this.#inGroup.get(group) ?? 0;
  }

  /**
   * Connections waiting in the queue for a rate token: of `client`, or of every client.
   *
   * @param client The client name; omitted for all clients.
   * @returns How many wait.
   */
  queued(client?: string): number {
    return client === undefined ? this.#queuedTotal : this.#queued.get(client) ?? 0;
  }

  /**
   * Connections refused because their rate token was not due within their queue
   * timeout, since the limiter was created.
   *
   * @returns The count.
   */
  get queueTimeouts(): number {
    return this.#queueTimeouts;
  }

  /**
   * Open lease counts per client, for metrics and status pages. Clients with none
   * are absent.
   *
   * @returns A new map from client name to open leases.
   */
  snapshot(): Map<string, number> {
    return new Map(this.#active);
  }

  /**
   * Queued connections per client; clients with none are absent.
   *
   * @returns A new map from client name to connections waiting in the queue.
   */
  queuedSnapshot(): Map<string, number> {
    return new Map(this.#queued);
  }

  #release(lease: _Lease): void {
    const client = lease.client;
    const open = this.#active.get(client) ?? 0;
    if (open <= 1) this.#active.delete(client);
    else this.#active.set(client, open - 1);
    const group = lease.group;
    if (group !== undefined) {
      const inGroup = this.#inGroup.get(group) ?? 0;
      if (inGroup <= 1) this.#inGroup.delete(group);
      else this.#inGroup.set(group, inGroup - 1);
    }
    try {
      const done = this.#store.release(lease.keys, this.#clock.now());
      if (done instanceof Promise) {
        done.then(undefined, (error: unknown) => logReleaseFailure(client, error));
      }
    } catch (error) {
      logReleaseFailure(client, error);
    }
  }
}

function logReleaseFailure(client: string, error: unknown): void {
  logger.error("Cannot release connection slot of client {client}: {error}", { client, error });
}

function checkName(what: "client" | "group", name: string): void {
  if (typeof name !== "string" || name === "" || name.includes(SEPARATOR)) {
    throw new TypeError(
      `Cannot limit ${what}: name must be a non-empty string without U+001F, received ${
        JSON.stringify(name)
      }`,
    );
  }
}

function checkLimits(limits: ClientLimits): void {
  const { concurrent, rate } = limits;
  if (!(concurrent === Infinity || (Number.isSafeInteger(concurrent) && concurrent >= 1))) {
    throw new RangeError(
      `Cannot limit client: "concurrent" must be a positive integer or Infinity, received ${concurrent}`,
    );
  }
  if (rate === undefined) return;
  if (!(Number.isSafeInteger(rate.count) && rate.count >= 1)) {
    throw new RangeError(
      `Cannot limit client: "rate.count" must be a positive integer, received ${rate.count}`,
    );
  }
  if (!(Number.isFinite(rate.per) && rate.per > 0)) {
    throw new RangeError(
      `Cannot limit client: "rate.per" must be a positive number of milliseconds, received ${rate.per}`,
    );
  }
}
