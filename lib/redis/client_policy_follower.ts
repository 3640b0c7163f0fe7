/**
 * {@linkcode ClientPolicyFollower}: how an instance keeps serving the fleet's client
 * policy. It applies each version announced on the store's channel at once, checks
 * the stored version every few seconds in case an announcement was missed, and
 * keeps the version it has while the store is unreachable or holds a version this
 * instance cannot serve.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";
import { errorMessage } from "../core/errors.ts";
import type { ClientPolicyStatus } from "../config/client_policy.ts";
import type { StoredClientPolicy } from "./client_policy_store.ts";

const logger = getLogger(["mtlb", "cluster"]);

/** The period of the version check that backs up the announcements, in milliseconds. */
export const CLIENT_POLICY_CHECK_MS = 5000;

/** What a {@linkcode ClientPolicyFollower} needs of a store; a `RedisClientPolicyStore` fits. */
export interface ClientPolicySource {
  /** The policy stored, or `undefined` when none was pushed. */
  read(): Promise<StoredClientPolicy | undefined>;
  /** The version stored and its SHA-256, or `undefined` when none was pushed. */
  head(): Promise<{ version: number; sha256: string } | undefined>;
  /** Listens to announced versions; resolves with whether the subscription is in place. */
  subscribe(listener: (version: number) => void): Promise<boolean>;
}

/**
 * What an instance serves, and how its store is doing: `/status` and metrics show it.
 * The same shape as the balancer's {@linkcode ClientPolicyStatus}.
 */
export type ClientPolicyState = ClientPolicyStatus;

/** Options of {@linkcode ClientPolicyFollower}. */
export interface ClientPolicyFollowerOptions {
  /** Where the policy is kept. */
  store: ClientPolicySource;
  /**
   * Puts a version in force (a reload of `[clients]`); throws, having changed
   * nothing, when this instance cannot serve it.
   */
  apply: (policy: StoredClientPolicy) => Promise<void>;
  /**
   * The version in force at start; `undefined` when the file's `[clients]` is.
   *
   * @default {undefined}
   */
  initial?: StoredClientPolicy;
  /**
   * Milliseconds between two version checks.
   *
   * @default {5000}
   */
  checkInterval?: number;
  /**
   * Timers of the periodic check.
   *
   * @default {the system clock}
   */
  clock?: Clock;
  /**
   * Wall-clock time for `appliedAt`, ms since the epoch.
   *
   * @default {Date.now}
   */
  wall?: () => number;
}

/**
 * Follows the client policy of a store: announced versions are applied at once,
 * and the stored version is checked every `checkInterval` as well. Checks run one at
 * a time; one asked for meanwhile runs after, so the latest version always wins.
 *
 * @example Usage
 * ```ts
 * import { ClientPolicyFollower } from "./client_policy_follower.ts";
 * import assert from "node:assert/strict";
 *
 * const policy = { version: 3, document: "[clients]\n", sha256: "ab", pushedAt: "2026-01-01T00:00:00.000Z" };
 * const applied: number[] = [];
 * await using follower = new ClientPolicyFollower({
 *   store: {
 *     read: () => Promise.resolve(policy),
 *     head: () => Promise.resolve(policy),
 *     subscribe: () => Promise.resolve(true),
 *   },
 *   apply: (p) => {
 *     applied.push(p.version);
 *     return Promise.resolve();
 *   },
 * });
 * await follower.start();
 * assert.deepEqual(applied, [3]);
 * assert.equal(follower.state.version, 3);
 * ```
 */
export class ClientPolicyFollower implements AsyncDisposable {
  #options: ClientPolicyFollowerOptions;
  #clock: Clock;
  #wall: () => number;
  #interval: number;
  #inForce: StoredClientPolicy | undefined;
  #appliedAt: number | undefined;
  #storeVersion: number | undefined;
  #reachable = false;
  #storeErrors = 0;
  #refused = 0;
  #lastError: string | undefined;
  /** The version last refused and logged, so that a refusal is logged once. */
  #refusedKey: string | undefined;
  #emptyLogged = false;
  #running: Promise<void> | undefined;
  #again = false;
  #timer: TimerId | undefined;
  #closed = false;

  /**
   * Creates the follower; nothing happens until {@linkcode ClientPolicyFollower.start}.
   *
   * @param options The store, how to apply a version, the version in force, timers.
   * @throws {RangeError} When `checkInterval` is not a positive number.
   */
  constructor(options: ClientPolicyFollowerOptions) {
    const interval = options.checkInterval ?? CLIENT_POLICY_CHECK_MS;
    if (!(interval > 0 && Number.isFinite(interval))) {
      throw new RangeError(
        `Cannot follow the client policy: "checkInterval" must be a positive number, received ${interval}`,
      );
    }
    this.#options = options;
    this.#interval = interval;
    this.#clock = options.clock ?? systemClock;
    this.#wall = options.wall ?? Date.now;
    this.#inForce = options.initial;
    if (options.initial !== undefined) {
      this.#appliedAt = this.#wall();
      this.#reachable = true;
    }
  }

  /** The version in force, or `undefined` while the file's `[clients]` is. */
  get inForce(): StoredClientPolicy | undefined {
    return this.#inForce;
  }

  /**
   * What this instance serves and how its store is doing.
   *
   * @returns A fresh snapshot.
   */
  get state(): ClientPolicyState {
    const p = this.#inForce;
    const state: ClientPolicyState = {
      source: p === undefined ? "file" : "store",
      storeReachable: this.#reachable,
      storeErrors: this.#storeErrors,
      refused: this.#refused,
    };
    if (p !== undefined) {
      state.version = p.version;
      state.sha256 = p.sha256;
      state.pushedAt = p.pushedAt;
    }
    if (this.#appliedAt !== undefined) state.appliedAt = new Date(this.#appliedAt).toISOString();
    if (this.#storeVersion !== undefined && this.#storeVersion !== p?.version) {
      state.storeVersion = this.#storeVersion;
    }
    if (this.#lastError !== undefined) state.lastError = this.#lastError;
    return state;
  }

  /**
   * Subscribes to the announcements, checks the store once and arms the periodic
   * check.
   *
   * @returns When the first check is done.
   */
  async start(): Promise<void> {
    await this.#options.store.subscribe((version) => {
      if (version !== this.#inForce?.version) void this.check();
    });
    await this.check();
    this.#arm();
  }

  /**
   * Reads the store and applies its version when it is not the one in force. A
   * check asked for while one runs runs after it.
   *
   * @returns When the check (and any asked for meanwhile) is done; it never rejects.
   */
  check(): Promise<void> {
    if (this.#running !== undefined) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#checkOnce(false);
      } while (this.#again && !this.#closed);
    })().finally(() => this.#running = undefined);
    return this.#running;
  }

  /**
   * Checks again, trying once more a stored version this instance refused (after a
   * reload of its own file, which may now allow it).
   *
   * @returns When the check is done; it never rejects.
   */
  recheck(): Promise<void> {
    this.#refusedKey = undefined;
    return this.check();
  }

  /** Stops the periodic check; announcements are ignored from now on. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    await this.#running;
  }

  /** Same as {@linkcode ClientPolicyFollower.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #arm(): void {
    if (this.#closed) return;
    this.#timer = this.#clock.setTimeout(() => {
      void this.#periodic().finally(() => this.#arm());
    }, this.#interval);
  }

  /** The periodic check: the version alone, the document only when it differs. */
  async #periodic(): Promise<void> {
    if (this.#running !== undefined) return;
    this.#running = this.#checkOnce(true).finally(() => this.#running = undefined);
    await this.#running;
  }

  async #checkOnce(headFirst: boolean): Promise<void> {
    if (this.#closed) return;
    const { store } = this.#options;
    let stored: StoredClientPolicy | undefined;
    try {
      if (headFirst) {
        const head = await store.head();
        const refused = head !== undefined &&
          this.#refusedKey === `${head.version}:${head.sha256}`;
        if (head !== undefined && (this.#current(head) || refused)) {
          return this.#reached(head.version);
        }
      }
      stored = await store.read();
    } catch (error) {
      return this.#unreachable(error);
    }
    this.#reached(stored?.version);
    if (stored === undefined) {
      if (!this.#emptyLogged) {
        logger.warning(
          "The client policy store holds no policy: serving {what}; publish one with `main.ts clients push`",
          { what: this.#describe() },
        );
        this.#emptyLogged = true;
      }
      return;
    }
    this.#emptyLogged = false;
    if (this.#current(stored) || this.#closed) return;
    const key = `${stored.version}:${stored.sha256}`;
    if (this.#refusedKey === key) return; // until recheck()
    try {
      await this.#options.apply(stored);
    } catch (error) {
      this.#lastError = `version ${stored.version} refused: ${errorMessage(error)}`;
      this.#refusedKey = key;
      this.#refused++;
      logger.error("Cannot apply client policy version {version}: still serving {what}: {error}", {
        version: stored.version,
        what: this.#describe(),
        error: errorMessage(error),
      });
      return;
    }
    this.#inForce = stored;
    this.#appliedAt = this.#wall();
    this.#lastError = undefined;
    this.#refusedKey = undefined;
    logger.info("Client policy version {version} in force", {
      version: stored.version,
      sha256: stored.sha256,
      pushedAt: stored.pushedAt,
    });
  }

  #current(head: { version: number; sha256: string }): boolean {
    return head.version === this.#inForce?.version && head.sha256 === this.#inForce.sha256;
  }

  #reached(version: number | undefined): void {
    if (!this.#reachable && this.#storeErrors > 0) {
      logger.info("The client policy store answers again");
    }
    this.#reachable = true;
    this.#storeVersion = version;
    if (this.#lastError?.startsWith("store: ")) this.#lastError = undefined;
  }

  #unreachable(error: unknown): void {
    this.#storeErrors++;
    this.#lastError = `store: ${errorMessage(error)}`;
    if (this.#reachable || this.#storeErrors === 1) {
      logger.warning(
        "Cannot read the client policy store: still serving {what}, checking again every {interval}: {error}",
        {
          what: this.#describe(),
          interval: formatDuration(this.#interval),
          error: errorMessage(error),
        },
      );
    }
    this.#reachable = false;
  }

  #describe(): string {
    const p = this.#inForce;
    return p === undefined ? "the file's [clients]" : `version ${p.version}`;
  }
}
