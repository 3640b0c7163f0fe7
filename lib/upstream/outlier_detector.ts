/**
 * Passive outlier detection: an upstream that fails on real traffic several times in
 * a row is ejected (taken out of rotation) for a time that grows with each repeat,
 * within a cap on how much of its group may be out at once. Only failures the
 * upstream causes count; see {@linkcode forwardOutcome}.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import type { ForwardResult } from "../proxy/forward.ts";
import { EjectionEvent } from "./health_event.ts";

const logger = getLogger(["mtlb", "outlier"]);

/** The longest delay runtimes accept for a timer. */
const MAX_DELAY = 2_147_483_647;

/**
 * Failures seen on real traffic that count against an upstream: a dial refused,
 * timed out or failed otherwise (unreachable host...), and a connection the upstream
 * reset, or that timed out at the TCP level, before it sent a single byte or its FIN.
 */
export const PASSIVE_FAILURE_REASONS = [
  "dial_refused",
  "dial_timeout",
  "dial_error",
  "upstream_reset",
  "upstream_timeout",
] as const;

/** One of {@linkcode PASSIVE_FAILURE_REASONS}. */
export type PassiveFailureReason = typeof PASSIVE_FAILURE_REASONS[number];

/**
 * Evidence that an upstream works, which ends a streak of failures of the same kind:
 * `connected` (a dial succeeded) ends a streak of dial failures, `answered` (the
 * upstream sent a byte or its FIN on a connection) ends a streak of connections
 * reset before any byte.
 */
export type PassiveSuccess = "connected" | "answered";

/** The thresholds of outlier detection. */
export interface OutlierSettings {
  /**
   * Consecutive failures of one kind (dials, or connections reset before any byte)
   * that eject an upstream; 0 turns ejection off.
   */
  consecutiveFailures: number;
  /** Milliseconds of the first ejection; the n-th lasts n times as long. */
  baseEjectionTime: number;
  /** The longest ejection, in milliseconds. */
  maxEjectionTime: number;
  /**
   * The largest share of the group's upstreams, in percent, that may be ejected at
   * once; at least one upstream when above 0, and never all of them.
   */
  maxEjectedPercent: number;
}

/** The defaults: as Envoy's outlier detection, but half of a group may be ejected. */
export const DEFAULT_OUTLIER_SETTINGS: Readonly<OutlierSettings> = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionTime: 30_000,
  maxEjectionTime: 300_000,
  maxEjectedPercent: 50,
});

/** Options of {@linkcode OutlierDetector}. */
export interface OutlierDetectorOptions extends Partial<OutlierSettings> {
  /**
   * Time source of ejections.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * The active health checks' view of an upstream. An upstream is not ejected when
   * no other upstream would be left that is healthy and not ejected.
   *
   * @default {every upstream is healthy}
   */
  isHealthy?: (address: string) => boolean;
}

/** An upstream's outlier state, as returned by {@linkcode OutlierDetector.snapshot}. */
export interface OutlierState {
  /** The upstream, `host:port` as configured. */
  address: string;
  /** Whether it is ejected now. */
  ejected: boolean;
  /** The failure behind the latest ejection; absent before the first one. */
  reason?: PassiveFailureReason;
  /** Clock time the latest ejection began; absent before the first one. */
  since?: number;
  /** Clock time the ejection ends, while ejected. */
  until?: number;
  /**
   * Recent ejections: the next ejection lasts `ejections + 1` times the base time
   * (up to the maximum). One is forgiven for each base time spent back in rotation.
   */
  ejections: number;
  /** Consecutive failed dials. */
  dialFailures: number;
  /** Consecutive connections reset (or timed out) before the upstream sent anything. */
  resetFailures: number;
}

interface Target {
  readonly address: string;
  ejected: boolean;
  reason: PassiveFailureReason | undefined;
  since: number | undefined;
  until: number | undefined;
  /** When the latest ejection ended. */
  returnedAt: number | undefined;
  ejections: number;
  dialFailures: number;
  resetFailures: number;
  timer: TimerId | undefined;
}

/**
 * Classifies how a forwarded connection ended, for {@linkcode OutlierDetector}: a
 * failure when the upstream reset the connection (or it timed out) before sending a
 * byte or its FIN; `answered` when the upstream sent anything, including a clean FIN
 * (a reset after that answers bytes the client wrote into a connection the upstream
 * had closed, as Redis does after `QUIT` or an error reply); otherwise `undefined`
 * (the client left, an idle timeout, a drain: nothing is learnt about the upstream).
 *
 * @example Usage
 * ```ts
 * import { forwardOutcome } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const reset = { reason: "upstream_reset", bytesFromUpstream: 0, upstreamEnded: false } as const;
 * assert.equal(forwardOutcome(reset), "upstream_reset");
 * assert.equal(forwardOutcome({ ...reset, bytesFromUpstream: 5, upstreamEnded: true }), "answered");
 * assert.equal(forwardOutcome({ ...reset, reason: "client_reset" }), undefined);
 * ```
 *
 * @param result How the forward ended.
 * @returns The failure to report, `answered`, or `undefined`.
 */
export function forwardOutcome(
  result: Pick<ForwardResult, "reason" | "bytesFromUpstream" | "upstreamEnded">,
): PassiveFailureReason | "answered" | undefined {
  if (result.bytesFromUpstream > 0 || result.upstreamEnded) return "answered";
  if (result.reason === "upstream_reset" || result.reason === "upstream_timeout") {
    return result.reason;
  }
  return undefined;
}

/** Error codes of a dial that failed for a local reason (descriptors, ports, memory). */
const LOCAL_DIAL_ERRORS = new Set([
  "EMFILE",
  "ENFILE",
  "ENOBUFS",
  "ENOMEM",
  "EADDRNOTAVAIL",
  "EADDRINUSE",
]);

/**
 * Whether a dial failed for a reason on the balancer's side (no descriptor left, no
 * local port, no memory, no permission), which says nothing about the upstream and
 * must not count against it.
 *
 * @example Usage
 * ```ts
 * import { isLocalDialError } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isLocalDialError(Object.assign(new Error("too many open files"), { code: "EMFILE" })));
 * assert.ok(!isLocalDialError(Object.assign(new Error("refused"), { code: "ECONNREFUSED" })));
 * ```
 *
 * @param error The dial's error.
 * @returns `true` for a local failure.
 */
export function isLocalDialError(error: unknown): boolean {
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    return true;
  }
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && LOCAL_DIAL_ERRORS.has(code);
}

function isDialFailure(reason: PassiveFailureReason): boolean {
  return reason === "dial_refused" || reason === "dial_timeout" || reason === "dial_error";
}

/**
 * Checks and completes outlier settings.
 *
 * @param settings The settings given; missing ones take {@linkcode DEFAULT_OUTLIER_SETTINGS}.
 * @returns Every setting.
 * @throws {RangeError} When one is out of range.
 */
function resolveSettings(settings: Partial<OutlierSettings>): OutlierSettings {
  const resolved: OutlierSettings = {
    consecutiveFailures: settings.consecutiveFailures ??
      DEFAULT_OUTLIER_SETTINGS.consecutiveFailures,
    baseEjectionTime: settings.baseEjectionTime ?? DEFAULT_OUTLIER_SETTINGS.baseEjectionTime,
    maxEjectionTime: settings.maxEjectionTime ?? DEFAULT_OUTLIER_SETTINGS.maxEjectionTime,
    maxEjectedPercent: settings.maxEjectedPercent ?? DEFAULT_OUTLIER_SETTINGS.maxEjectedPercent,
  };
  const fail = (key: string, rule: string, value: unknown): never => {
    throw new RangeError(
      `Cannot configure outlier detection: "${key}" must be ${rule}, received ${value}`,
    );
  };
  const { consecutiveFailures, baseEjectionTime, maxEjectionTime, maxEjectedPercent } = resolved;
  if (!(Number.isSafeInteger(consecutiveFailures) && consecutiveFailures >= 0)) {
    fail("consecutiveFailures", "an integer from 0", consecutiveFailures);
  }
  if (!(baseEjectionTime > 0 && baseEjectionTime <= MAX_DELAY)) {
    fail("baseEjectionTime", `positive milliseconds, at most ${MAX_DELAY}`, baseEjectionTime);
  }
  if (!(maxEjectionTime >= baseEjectionTime && maxEjectionTime <= MAX_DELAY)) {
    fail(
      "maxEjectionTime",
      `milliseconds from baseEjectionTime (${baseEjectionTime}) to ${MAX_DELAY}`,
      maxEjectionTime,
    );
  }
  if (
    !(Number.isInteger(maxEjectedPercent) && maxEjectedPercent >= 0 && maxEjectedPercent <= 100)
  ) {
    fail("maxEjectedPercent", "an integer from 0 to 100", maxEjectedPercent);
  }
  return resolved;
}

/**
 * Passive outlier detection for one group of upstreams, after Envoy's: failures seen
 * on real traffic eject an upstream for a while; {@linkcode EjectionEvent}s
 * (`"ejection"`) say when one is ejected and when it comes back, for a pool to follow
 * (`LeastConnPool.followHealth`). It is separate from the active health checks: their
 * `rise` and `fall` count probes only.
 *
 * - **What counts.** Only failures the upstream causes: report dial failures
 *   (but not {@linkcode isLocalDialError} ones) and the failures
 *   {@linkcode forwardOutcome} finds. Two streaks are kept per upstream: failed
 *   dials, ended by a dial that connects (`connected`); and connections reset before
 *   the upstream sent anything, ended by a connection it answered (`answered`). A
 *   successful dial does not end the second streak, so an upstream that accepts and
 *   resets everything is still caught.
 * - **Ejection.** When a streak reaches `consecutiveFailures`, the upstream is
 *   ejected for `baseEjectionTime` times its recent ejections (this one included),
 *   at most `maxEjectionTime`. One recent ejection is forgiven for each
 *   `baseEjectionTime` it then spends back in rotation. Failures and successes
 *   reported while it is ejected are ignored.
 * - **The end of an ejection** is timed only: an active probe that passes does not
 *   end it, because a connect-only probe passes on an upstream that resets real
 *   traffic. It comes back when its time is up; if it fails again it is ejected for
 *   longer.
 * - **Never below a floor.** At most `maxEjectedPercent` of the group is ejected at
 *   once (rounded down, but at least one upstream when above 0, and never all of
 *   them, so a group of one is never ejected and a group of two keeps one), and an
 *   upstream is not ejected when no other one is healthy (per `isHealthy`) and not
 *   ejected. A streak that reaches the threshold while the cap holds keeps counting;
 *   the next failure tries again.
 *
 * @example Usage
 * ```ts
 * import { FakeClock, OutlierDetector } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const clock = new FakeClock();
 * using detector = new OutlierDetector(["10.0.0.1:6379", "10.0.0.2:6379"], {
 *   clock,
 *   consecutiveFailures: 3,
 *   baseEjectionTime: 10_000,
 * });
 * for (let i = 0; i < 3; i++) detector.reportFailure("10.0.0.1:6379", "dial_timeout");
 * assert.ok(detector.isEjected("10.0.0.1:6379"));
 * assert.equal(detector.snapshot()[0]?.until, 10_000);
 *
 * // The other upstream is the last one left: the floor keeps it in.
 * for (let i = 0; i < 10; i++) detector.reportFailure("10.0.0.2:6379", "dial_refused");
 * assert.ok(!detector.isEjected("10.0.0.2:6379"));
 *
 * clock.advance(10_000);
 * assert.ok(!detector.isEjected("10.0.0.1:6379"));
 * ```
 */
export class OutlierDetector extends EventTarget implements Disposable {
  #targets = new Map<string, Target>();
  #settings: OutlierSettings;
  #clock: Clock;
  #isHealthy: (address: string) => boolean;
  #ejected = 0;
  #closed = false;

  /**
   * Creates a detector; every upstream starts in rotation with no failure.
   *
   * @param addresses The group's upstreams, `host:port` as configured.
   * @param options Thresholds, clock and the active health checks' view.
   * @throws {RangeError} When a setting is out of range.
   */
  constructor(addresses: Iterable<string>, options: OutlierDetectorOptions = {}) {
    super();
    const { clock, isHealthy, ...settings } = options;
    this.#settings = resolveSettings(settings);
    this.#clock = clock ?? systemClock;
    this.#isHealthy = isHealthy ?? (() => true);
    this.setTargets(addresses);
  }

  /** The thresholds in use. */
  get settings(): Readonly<OutlierSettings> {
    return { ...this.#settings };
  }

  /** How many upstreams are ejected now. */
  get ejectedCount(): number {
    return this.#ejected;
  }

  /**
   * Replaces the upstreams and, optionally, the thresholds (a reload). Upstreams that
   * stay keep their state; new ones start in rotation; removed ones are dropped
   * without an event. Ejections under way keep their end time, unless ejection is
   * now off (`consecutiveFailures` 0): then they end at once.
   *
   * @param addresses The group's upstreams.
   * @param settings New thresholds; missing ones take the defaults. Omit to keep the
   *   current ones.
   * @throws {RangeError} When a setting is out of range (nothing changes).
   */
  setTargets(addresses: Iterable<string>, settings?: Partial<OutlierSettings>): void {
    const resolved = settings === undefined ? this.#settings : resolveSettings(settings);
    const wanted = new Set(addresses);
    for (const target of this.#targets.values()) {
      if (wanted.has(target.address)) continue;
      if (target.timer !== undefined) this.#clock.clearTimeout(target.timer);
      if (target.ejected) this.#ejected--;
    }
    const next = new Map<string, Target>();
    for (const address of wanted) {
      next.set(address, this.#targets.get(address) ?? newTarget(address));
    }
    this.#targets = next;
    this.#settings = resolved;
    if (resolved.consecutiveFailures === 0) {
      for (const target of next.values()) if (target.ejected) this.#return(target);
    }
  }

  /**
   * Reports a failure the upstream caused. Unknown addresses, ejected upstreams and
   * calls after close are ignored.
   *
   * @param address The upstream, `host:port` as configured.
   * @param reason What failed.
   */
  reportFailure(address: string, reason: PassiveFailureReason): void {
    const target = this.#targets.get(address);
    if (target === undefined || target.ejected || this.#closed) return;
    const streak = isDialFailure(reason) ? ++target.dialFailures : ++target.resetFailures;
    const threshold = this.#settings.consecutiveFailures;
    if (threshold === 0 || streak < threshold) return;
    const blocked = this.#blocked(target);
    if (blocked !== undefined) {
      logger.debug(
        "Upstream {address} reached {streak} consecutive failures ({reason}) but stays: {blocked}",
        { address, streak, reason, blocked },
      );
      return;
    }
    this.#eject(target, reason, streak);
  }

  /**
   * Reports evidence that the upstream works; it ends the streak of the matching
   * kind. Unknown addresses, ejected upstreams and calls after close are ignored.
   *
   * @param address The upstream, `host:port` as configured.
   * @param kind `connected` after a successful dial, `answered` when the upstream sent
   *   anything on a connection.
   */
  reportSuccess(address: string, kind: PassiveSuccess): void {
    const target = this.#targets.get(address);
    if (target === undefined || target.ejected || this.#closed) return;
    if (kind === "connected") target.dialFailures = 0;
    else target.resetFailures = 0;
  }

  /**
   * Whether an upstream is ejected.
   *
   * @param address The upstream, `host:port` as configured.
   * @returns `false` for unknown addresses.
   */
  isEjected(address: string): boolean {
    return this.#targets.get(address)?.ejected === true;
  }

  /**
   * Whether an upstream has a streak of failures under way (for a relay that only
   * passes successes on when they end one).
   *
   * @param address The upstream, `host:port` as configured.
   * @returns `true` when either streak is above zero.
   */
  isFailing(address: string): boolean {
    const target = this.#targets.get(address);
    return target !== undefined && (target.dialFailures > 0 || target.resetFailures > 0);
  }

  /**
   * The state of every upstream, in configuration order (for status and metrics).
   *
   * @returns Fresh records.
   */
  snapshot(): OutlierState[] {
    const now = this.#clock.now();
    return Array.from(this.#targets.values(), (t): OutlierState => {
      const state: OutlierState = {
        address: t.address,
        ejected: t.ejected,
        ejections: t.ejected ? t.ejections : this.#recent(t, now),
        dialFailures: t.dialFailures,
        resetFailures: t.resetFailures,
      };
      if (t.reason !== undefined) state.reason = t.reason;
      if (t.since !== undefined) state.since = t.since;
      if (t.until !== undefined) state.until = t.until;
      return state;
    });
  }

  /** Ends every ejection timer; no event is dispatched afterwards. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const target of this.#targets.values()) {
      if (target.timer !== undefined) this.#clock.clearTimeout(target.timer);
      target.timer = undefined;
    }
  }

  /** Same as {@linkcode OutlierDetector.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Why `target` may not be ejected now, or `undefined` when it may. */
  #blocked(target: Target): string | undefined {
    const n = this.#targets.size;
    const percent = this.#settings.maxEjectedPercent;
    const cap = percent === 0 ? 0 : Math.min(n - 1, Math.max(1, Math.floor(n * percent / 100)));
    if (this.#ejected >= cap) {
      return `${this.#ejected} of ${n} upstreams are ejected, the most allowed (${percent}%)`;
    }
    for (const other of this.#targets.values()) {
      if (other !== target && !other.ejected && this.#isHealthy(other.address)) return undefined;
    }
    return "no other upstream is healthy and in rotation";
  }

  /** Recent ejections, less one per base time spent back in rotation. */
  #recent(target: Target, now: number): number {
    if (target.returnedAt === undefined) return target.ejections;
    const forgiven = Math.floor((now - target.returnedAt) / this.#settings.baseEjectionTime);
    return Math.max(0, target.ejections - forgiven);
  }

  #eject(target: Target, reason: PassiveFailureReason, streak: number): void {
    const { baseEjectionTime: base, maxEjectionTime: max } = this.#settings;
    const now = this.#clock.now();
    target.ejections = Math.min(this.#recent(target, now) + 1, Math.ceil(max / base));
    const duration = Math.min(base * target.ejections, max);
    target.ejected = true;
    target.reason = reason;
    target.since = now;
    target.until = now + duration;
    target.dialFailures = 0;
    target.resetFailures = 0;
    target.timer = this.#clock.setTimeout(() => {
      target.timer = undefined;
      this.#return(target);
    }, duration);
    this.#ejected++;
    logger.warn(
      "Upstream {address} ejected for {seconds} s after {streak} consecutive failures ({reason})",
      {
        address: target.address,
        seconds: duration / 1000,
        streak,
        reason,
        ejections: target.ejections,
      },
    );
    this.dispatchEvent(
      new EjectionEvent({
        address: target.address,
        ejected: true,
        reason,
        at: now,
        until: target.until,
      }),
    );
  }

  #return(target: Target): void {
    if (target.timer !== undefined) this.#clock.clearTimeout(target.timer);
    const now = this.#clock.now();
    target.timer = undefined;
    target.ejected = false;
    target.until = undefined;
    target.returnedAt = now;
    this.#ejected--;
    if (this.#closed) return;
    logger.info("Upstream {address} is back in rotation after its ejection", {
      address: target.address,
    });
    this.dispatchEvent(
      new EjectionEvent({
        address: target.address,
        ejected: false,
        reason: "ejection_ended",
        at: now,
      }),
    );
  }
}

function newTarget(address: string): Target {
  return {
    address,
    ejected: false,
    reason: undefined,
    since: undefined,
    until: undefined,
    returnedAt: undefined,
    ejections: 0,
    dialFailures: 0,
    resetFailures: 0,
    timer: undefined,
  };
}
