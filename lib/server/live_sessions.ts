/**
 * The connections a balancer is forwarding, as reloads and the lifetime sweep see
 * them: each can be ended for a reason of mtlb's own (`revoked`, `policy_changed`,
 * `max_lifetime`), which its audit record then carries. One timer sweeps them all for
 * `[server] max_lifetime`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Clock, TimerId } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";
import type { SessionEndReason } from "../core/reasons.ts";

const log = getLogger(["mtlb", "server"]);

/** A forwarded connection. */
export interface LiveSession {
  /** The client's socket. */
  readonly socket: TLSSocket;
  /** The upstream's socket. */
  readonly upstream: Socket;
  /** The client it was admitted as. */
  readonly client: string;
  /** The group it was routed to. */
  readonly group: string;
  /** When it was forwarded (balancer clock). */
  readonly started: number;
  /** Why mtlb ended it, once it did. */
  end: SessionEndReason | undefined;
  /** What mtlb said when it ended it. */
  detail: string | undefined;
}

/** Options of {@linkcode LiveSessions}. */
export interface LiveSessionsOptions {
  /** The clock the lifetime is measured on. */
  clock: Clock;
  /** `[server] max_lifetime` in force, ms; read at every sweep. */
  maxLifetime: () => number | undefined;
  /** Told of every session mtlb ends (count it, log it). */
  onEnd: (session: LiveSession, reason: SessionEndReason, detail: string) => void;
}

/**
 * The live sessions of a balancer.
 *
 * @example Usage
 * ```ts ignore
 * const sessions = new LiveSessions({ clock, maxLifetime: () => 3_600_000, onEnd });
 * const session = sessions.add({ socket, upstream, client: "alice", group: "echo" });
 * // ... forward ...
 * sessions.delete(session);
 * ```
 */
export class LiveSessions implements Iterable<LiveSession> {
  #sessions = new Set<LiveSession>();
  #options: LiveSessionsOptions;
  #timer: TimerId | undefined;

  /**
   * Creates the table.
   *
   * @param options Clock, lifetime and what to do when mtlb ends one.
   */
  constructor(options: LiveSessionsOptions) {
    this.#options = options;
  }

  /** How many sessions are live. */
  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Iterates over the live sessions.
   *
   * @returns An iterator.
   */
  [Symbol.iterator](): Iterator<LiveSession> {
    return this.#sessions[Symbol.iterator]();
  }

  /**
   * Adds a forwarded connection.
   *
   * @param session Its sockets, client and group.
   * @returns The live session.
   */
  add(session: Pick<LiveSession, "socket" | "upstream" | "client" | "group">): LiveSession {
    const live: LiveSession = {
      ...session,
      started: this.#options.clock.now(),
      end: undefined,
      detail: undefined,
    };
    this.#sessions.add(live);
    this.arm();
    return live;
  }

  /**
   * Removes a session whose forward ended.
   *
   * @param session The session.
   */
  delete(session: LiveSession): void {
    this.#sessions.delete(session);
  }

  /**
   * Ends a session for a reason of mtlb's own: both sockets are destroyed, and the
   * forward's audit record says why. Once per session.
   *
   * @param session The session.
   * @param reason Why.
   * @param detail What changed, for the log.
   */
  end(session: LiveSession, reason: SessionEndReason, detail: string): void {
    if (session.end !== undefined) return;
    session.end = reason;
    session.detail = detail;
    this.#options.onEnd(session, reason, detail);
    session.socket.destroy();
    session.upstream.destroy();
  }

  /**
   * After a reload: each session that `refuses` says the configuration now in force
   * would refuse is ended for that reason (`"close"`), or logged as kept (`"keep"`,
   * `[server] on_policy_change`).
   *
   * @param refuses Why a session would now be refused, or `undefined`.
   * @param onPolicyChange What to do with such a session.
   */
  recheck(
    refuses: (session: LiveSession) => { reason: SessionEndReason; detail: string } | undefined,
    onPolicyChange: "close" | "keep",
  ): void {
    for (const session of this.#sessions) {
      const refused = session.end === undefined ? refuses(session) : undefined;
      if (refused === undefined) continue;
      if (onPolicyChange === "close") this.end(session, refused.reason, refused.detail);
      else {
        const { client, group } = session;
        log.info(
          "Keeping a connection of {client} to {group} (on_policy_change = keep): {reason}",
          {
            client,
            group,
            ...refused,
          },
        );
      }
    }
  }

  /** Schedules the sweep that ends sessions past `max_lifetime`, if one is due. */
  arm(): void {
    const max = this.#options.maxLifetime();
    if (max === undefined || this.#timer !== undefined || this.#sessions.size === 0) return;
    // One sweep for every session, at most a second (or a quarter of the lifetime) late.
    const every = Math.max(1, Math.min(1000, max / 4));
    const clock = this.#options.clock;
    this.#timer = clock.setTimeout(() => {
      this.#timer = undefined;
      const limit = this.#options.maxLifetime();
      if (limit === undefined) return;
      const now = clock.now();
      for (const session of this.#sessions) {
        if (now - session.started >= limit) {
          this.end(session, "max_lifetime", `open for ${formatDuration(limit)}`);
        }
      }
      this.arm();
    }, every);
  }

  /** Ends every session at once and stops the sweep (a shutdown). */
  destroyAll(): void {
    if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const session of this.#sessions) {
      session.socket.destroy();
      session.upstream.destroy();
    }
  }
}
