/**
 * Active health of upstreams: periodic probes with HAProxy-style rise/fall
 * thresholds, jitter and a stall-aware timeout. The check each probe runs (by
 * default `tcpCheck`, a TCP connect with an optional `PING` / `+PONG` exchange) is in
 * `health_check.ts`. Failures seen on real traffic are the business of
 * `OutlierDetector`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type HostPort, parseHostPort } from "../core/address.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import {
  type HealthCheck,
  type HealthCheckSettings,
  probeFailureReason,
  type ProbeReason,
  tcpCheck,
} from "./health_check.ts";
import { HealthChangeEvent } from "./health_event.ts";

/** The check a probe runs, re-exported for the modules that configure a probe. */

const logger = getLogger(["mtlb", "health"]);
const encoder = new TextEncoder();

/** The longest delay runtimes accept for a timer; longer ones fire at once. */
const MAX_DELAY = 2_147_483_647;
const DEFAULT_INTERVAL = 30_000;
const DEFAULT_TIMEOUT = 1_000;
const DEFAULT_JITTER = 0.1;

/**
 * The health of a target: `unknown` until its first probe result, then `healthy`
 * or `unhealthy`. Only `healthy` targets count as healthy.
 */
export type HealthState = "unknown" | "healthy" | "unhealthy";

/** Check settings as configured; every field is optional. */
export interface HealthCheckOptions {
  /**
   * Bytes written once connected (text is sent as UTF-8), e.g. `"PING\r\n"`.
   *
   * @default {nothing: connect only}
   */
  send?: string | Uint8Array;
  /**
   * The prefix the reply must start with (text as UTF-8), e.g. `"+PONG"`. The check
   * reads exactly this many bytes, so a longer reply (`"+PONG\r\n"`) passes.
   *
   * @default {nothing: no reply awaited}
   */
  expect?: string | Uint8Array;
  /**
   * Milliseconds from the start of one probe to the start of the next, before jitter.
   *
   * @default {30000}
   */
  interval?: number;
  /**
   * Milliseconds a probe may take (connect, send and reply) before it fails with
   * `probe_timeout`; see {@linkcode HealthProbe} for the event-loop stall grace.
   *
   * @default {1000}
   */
  timeout?: number;
  /**
   * Consecutive successful probes that turn an unhealthy target healthy.
   *
   * @default {1}
   */
  rise?: number;
  /**
   * Consecutive failed probes that turn a healthy target unhealthy.
   *
   * @default {1}
   */
  fall?: number;
  /**
   * Random spread of each interval as a fraction of it, from 0 to 1: `0.1` draws
   * every interval uniformly from 90% to 110% of `interval`.
   *
   * @default {0.1}
   */
  jitter?: number;
}

/** An upstream to probe, with settings that override the probe's defaults. */
export interface HealthTarget {
  /** The upstream, `host:port`. */
  address: string;
  /**
   * Overrides of the probe's default settings for this upstream (a group's own
   * `send` / `expect`, say).
   *
   * @default {the probe's defaults}
   */
  settings?: HealthCheckOptions;
}

/** The result of one active probe. */
export interface HealthCheckResult {
  /** Whether the probe passed. */
  ok: boolean;
  /** `probe_ok` or why it failed. */
  reason: ProbeReason;
  /** Milliseconds from the start of the probe to its result. */
  latencyMs: number;
  /** Clock time of the result, in milliseconds. */
  at: number;
}

/** A target's health, as returned by {@linkcode HealthProbe.snapshot}. */
export interface TargetHealth {
  /** The upstream, `host:port` as configured. */
  address: string;
  /** The current state. */
  state: HealthState;
  /** Why the target entered its current state; absent while `unknown`. */
  reason?: ProbeReason;
  /** Clock time the target entered its current state; absent while `unknown`. */
  since?: number;
  /** Consecutive successful probes. */
  successes: number;
  /** Consecutive failed probes. */
  failures: number;
  /** The latest active probe result; absent before the first one. */
  lastResult?: HealthCheckResult;
}

/** Options of {@linkcode HealthProbe}: default check settings plus the machinery. */
export interface HealthProbeOptions extends HealthCheckOptions {
  /**
   * The check run for each probe.
   *
   * @default {tcpCheck}
   */
  check?: HealthCheck;
  /**
   * Time source for intervals and timeouts.
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Uniform random numbers in `[0, 1)` for the jitter.
   *
   * @default {Math.random}
   */
  random?: () => number;
  /** Closes the probe when aborted, as {@linkcode HealthProbe.close} does. */
  signal?: AbortSignal;
}

function toBytes(value: string | Uint8Array | undefined): Uint8Array {
  if (value === undefined) return new Uint8Array();
  return typeof value === "string" ? encoder.encode(value) : value.slice();
}

function resolveSettings(
  defaults: HealthCheckOptions,
  own: HealthCheckOptions | undefined,
  where: string,
): HealthCheckSettings {
  const settings: HealthCheckSettings = {
    send: toBytes(own?.send ?? defaults.send),
    expect: toBytes(own?.expect ?? defaults.expect),
    interval: own?.interval ?? defaults.interval ?? DEFAULT_INTERVAL,
    timeout: own?.timeout ?? defaults.timeout ?? DEFAULT_TIMEOUT,
    rise: own?.rise ?? defaults.rise ?? 1,
    fall: own?.fall ?? defaults.fall ?? 1,
    jitter: own?.jitter ?? defaults.jitter ?? DEFAULT_JITTER,
  };
  const fail = (key: string, rule: string, value: unknown): never => {
    throw new RangeError(
      `Cannot configure health checks${where}: "${key}" must be ${rule}, received ${value}`,
    );
  };
  const { interval, timeout, rise, fall, jitter } = settings;
  if (!(jitter >= 0 && jitter <= 1)) fail("jitter", "from 0 to 1", jitter);
  if (!(interval > 0 && interval * (1 + jitter) <= MAX_DELAY)) {
    fail(
      "interval",
      `positive milliseconds, at most ${Math.floor(MAX_DELAY / (1 + jitter))}`,
      interval,
    );
  }
  if (!(timeout > 0 && timeout <= MAX_DELAY)) {
    fail("timeout", `positive milliseconds, at most ${MAX_DELAY}`, timeout);
  }
  if (!(Number.isSafeInteger(rise) && rise >= 1)) fail("rise", "a positive integer", rise);
  if (!(Number.isSafeInteger(fall) && fall >= 1)) fail("fall", "a positive integer", fall);
  return settings;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function sameSettings(a: HealthCheckSettings, b: HealthCheckSettings): boolean {
  return sameBytes(a.send, b.send) && sameBytes(a.expect, b.expect) &&
    a.interval === b.interval && a.timeout === b.timeout && a.rise === b.rise &&
    a.fall === b.fall && a.jitter === b.jitter;
}

interface InFlight {
  controller: AbortController;
  /** Clears the timeout timer. */
  clearTimer: () => void;
  /** Resolves when the check has settled and its result was handled. */
  settled: Promise<void>;
}

interface Target {
  readonly address: string;
  readonly hostPort: HostPort;
  settings: HealthCheckSettings;
  state: HealthState;
  reason: ProbeReason | undefined;
  since: number | undefined;
  successes: number;
  failures: number;
  lastResult: HealthCheckResult | undefined;
  /** Start of the latest probe. */
  startedAt: number | undefined;
  /** The timer of the next probe, while idle. */
  timer: TimerId | undefined;
  inFlight: InFlight | undefined;
  removed: boolean;
  /** Resolves on the first result, on removal or on close. */
  readonly first: PromiseWithResolvers<void>;
}

/**
 * Active health of a set of upstreams, dispatching a
 * {@linkcode HealthChangeEvent} (`"change"`) whenever one changes state.
 *
 * **States.** A target is `unknown` (not healthy) until its first probe result,
 * which sets it healthy or unhealthy outright and dispatches a `"change"`, so every
 * target yields one event once {@linkcode HealthProbe.ready} resolves. From then on,
 * HAProxy-style: a healthy target turns unhealthy after `fall` consecutive failed
 * probes, an unhealthy one turns healthy after `rise` consecutive successful probes.
 *
 * **Active probes.** {@linkcode HealthProbe.start} probes every target at once;
 * each next probe starts `interval` (± `jitter`) after the previous one started, and
 * never while the previous one is still in flight.
 *
 * **Stall-aware timeout.** Under load (say a burst of TLS handshakes) the event loop
 * can stall for longer than `timeout`; when it resumes, timers run before the socket
 * reads that were waiting, so a naive timer would fail healthy upstreams. When the
 * timeout timer fires more than `timeout / 2` late, the check gets one grace period
 * of `timeout` before it fails with `probe_timeout`.
 *
 * **Passive signals** (failures on real traffic) do not count here: an
 * `OutlierDetector` ejects upstreams for them, with its own thresholds.
 *
 * @example Usage
 * ```ts
 * import { HealthCheckError, HealthProbe } from "@mtlb/mtlb";
 * import { FakeClock } from "@mtlb/mtlb";
 * import type { HealthChangeEvent } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const refused = new Set(["10.0.0.2:6379"]);
 * await using probe = new HealthProbe(["10.0.0.1:6379", "10.0.0.2:6379"], {
 *   clock: new FakeClock(),
 *   send: "PING\r\n",
 *   expect: "+PONG",
 *   // The default check is tcpCheck; this one answers without sockets.
 *   check: (address) =>
 *     refused.has(`${address.hostname}:${address.port}`)
 *       ? Promise.reject(new HealthCheckError("probe_refused", "Connection refused"))
 *       : Promise.resolve(),
 * });
 * const changes: string[] = [];
 * probe.addEventListener("change", (event) => {
 *   const { address, healthy, reason } = (event as HealthChangeEvent).change;
 *   changes.push(`${address} ${healthy ? "up" : "down"} (${reason})`);
 * });
 *
 * probe.start();
 * await probe.ready;
 * assert.ok(probe.isHealthy("10.0.0.1:6379"));
 * assert.ok(!probe.isHealthy("10.0.0.2:6379"));
 *
 * assert.deepEqual(changes, [
 *   "10.0.0.1:6379 up (probe_ok)",
 *   "10.0.0.2:6379 down (probe_refused)",
 * ]);
 * ```
 */
export class HealthProbe extends EventTarget implements AsyncDisposable {
  #targets = new Map<string, Target>();
  #defaults: HealthCheckOptions;
  #check: HealthCheck;
  #clock: Clock;
  #random: () => number;
  #signal: AbortSignal | undefined;
  #started = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Checks of removed targets that have not settled yet. */
  #draining = new Set<Promise<void>>();
  #onAbort = (): void => void this.close();

  /**
   * Creates a probe; nothing runs until {@linkcode HealthProbe.start}.
   *
   * @param targets The upstreams, as `host:port` or with their own settings.
   * @param options Default check settings, the check, clock, random source and signal.
   * @throws {TypeError} When an address is not `host:port`, or one is listed twice
   * with different settings.
   * @throws {RangeError} When a setting is out of range.
   */
  constructor(targets: Iterable<string | HealthTarget>, options: HealthProbeOptions = {}) {
    super();
    const { check, clock, random, signal, ...defaults } = options;
    resolveSettings(defaults, undefined, "");
    this.#defaults = defaults;
    this.#check = check ?? tcpCheck;
    this.#clock = clock ?? systemClock;
    this.#random = random ?? Math.random;
    this.#signal = signal;
    this.setTargets(targets);
    if (signal?.aborted) void this.close();
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /**
   * Resolves once every current target has its first result (or was removed, or the
   * probe closed). Read it again after {@linkcode HealthProbe.setTargets} to wait for
   * the new targets too. Never rejects.
   *
   * @returns A promise for the end of the first round.
   */
  get ready(): Promise<void> {
    return Promise.all(Array.from(this.#targets.values(), (t) => t.first.promise)).then(() => {});
  }

  /**
   * Starts probing: every target is probed at once, then on its own jittered schedule.
   * Calling it again, or after close, does nothing.
   */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    for (const target of this.#targets.values()) this.#probe(target);
  }

  /**
   * Replaces the targets, for a configuration reload. Targets that stay keep their
   * state, counters and schedule (a changed interval applies from their last probe
   * start); new ones start `unknown` and, once started, are probed at once; removed
   * ones are dropped without an event and their checks in flight are aborted. The
   * list is validated before anything changes.
   *
   * @param targets The upstreams, as `host:port` or with their own settings.
   * @throws {TypeError} When an address is not `host:port`, or one is listed twice
   * with different settings.
   * @throws {RangeError} When a setting is out of range.
   */
  setTargets(targets: Iterable<string | HealthTarget>): void {
    const wanted = new Map<string, { hostPort: HostPort; settings: HealthCheckSettings }>();
    for (const item of targets) {
      const { address, settings: own } = typeof item === "string" ? { address: item } : item;
      const hostPort = parseHostPort(address);
      const settings = resolveSettings(this.#defaults, own, ` of ${JSON.stringify(address)}`);
      const seen = wanted.get(address);
      if (seen !== undefined && !sameSettings(seen.settings, settings)) {
        throw new TypeError(
          `Cannot set health check targets: ${
            JSON.stringify(address)
          } is listed twice with different settings`,
        );
      }
      wanted.set(address, { hostPort, settings });
    }

    for (const target of this.#targets.values()) {
      if (!wanted.has(target.address)) this.#remove(target);
    }
    const next = new Map<string, Target>();
    const added: Target[] = [];
    for (const [address, { hostPort, settings }] of wanted) {
      const kept = this.#targets.get(address);
      if (kept === undefined) {
        const target = newTarget(address, hostPort, settings);
        if (this.#closed) target.first.resolve();
        next.set(address, target);
        added.push(target);
        continue;
      }
      next.set(address, kept);
      if (sameSettings(kept.settings, settings)) continue;
      kept.settings = settings;
      if (kept.timer !== undefined) {
        this.#clock.clearTimeout(kept.timer);
        kept.timer = undefined;
        this.#schedule(kept);
      }
    }
    this.#targets = next;
    if (this.#started && !this.#closed) { for (const target of added) this.#probe(target); }
  }

  /**
   * Whether an upstream is healthy.
   *
   * @param address The upstream, `host:port` as configured.
   * @returns `true` only for a target in the `healthy` state; `false` for `unknown`,
   * `unhealthy` and addresses that are not targets.
   */
  isHealthy(address: string): boolean {
    return this.#targets.get(address)?.state === "healthy";
  }

  /**
   * The health of every target, in configuration order (for the admin API and logs).
   *
   * @returns Copies; later changes do not show in them.
   */
  snapshot(): TargetHealth[] {
    return Array.from(this.#targets.values(), (t): TargetHealth => {
      const health: TargetHealth = {
        address: t.address,
        state: t.state,
        successes: t.successes,
        failures: t.failures,
      };
      if (t.reason !== undefined) health.reason = t.reason;
      if (t.since !== undefined) health.since = t.since;
      if (t.lastResult !== undefined) health.lastResult = { ...t.lastResult };
      return health;
    });
  }

  /**
   * Stops probing: cancels every timer, aborts the checks in flight and waits for them
   * to settle. No event is dispatched afterwards; state stays readable. Idempotent.
   *
   * @returns Resolves once every check has settled.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /**
   * Same as {@linkcode HealthProbe.close}, for `await using`.
   *
   * @returns Resolves once every check has settled.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    const settling = [...this.#draining];
    for (const target of this.#targets.values()) {
      if (target.timer !== undefined) this.#clock.clearTimeout(target.timer);
      target.timer = undefined;
      const inFlight = target.inFlight;
      if (inFlight !== undefined) {
        inFlight.clearTimer();
        inFlight.controller.abort(new DOMException("Health probe closed", "AbortError"));
        settling.push(inFlight.settled);
      }
      target.first.resolve();
    }
    await Promise.all(settling);
  }

  #remove(target: Target): void {
    target.removed = true;
    if (target.timer !== undefined) this.#clock.clearTimeout(target.timer);
    target.timer = undefined;
    const inFlight = target.inFlight;
    if (inFlight !== undefined) {
      inFlight.clearTimer();
      inFlight.controller.abort(
        new DOMException("Upstream removed from health checks", "AbortError"),
      );
      this.#draining.add(inFlight.settled);
      void inFlight.settled.then(() => this.#draining.delete(inFlight.settled));
    }
    target.first.resolve();
  }

  #schedule(target: Target): void {
    if (this.#closed || target.removed || !this.#started) return;
    const { interval, jitter } = target.settings;
    const random = Math.min(1, Math.max(0, this.#random()));
    const period = interval * (1 + jitter * (2 * random - 1));
    const now = this.#clock.now();
    const delay = Math.max(0, (target.startedAt ?? now) + period - now);
    target.timer = this.#clock.setTimeout(() => {
      target.timer = undefined;
      this.#probe(target);
    }, delay);
  }

  #probe(target: Target): void {
    const settings = target.settings;
    const clock = this.#clock;
    const controller = new AbortController();
    const startedAt = clock.now();
    target.startedAt = startedAt;
    let done = false;
    let graced = false;
    let timer: TimerId | undefined;
    const arm = (ms: number): void => {
      const due = clock.now() + ms;
      timer = clock.setTimeout(() => {
        timer = undefined;
        const late = clock.now() - due;
        if (!graced && late > settings.timeout / 2) {
          // The event loop stalled: the reply may be sitting unread behind this timer.
          graced = true;
          logger.debug(
            "Health check of {address} timer fired {late} ms late; granting {timeout} ms grace",
            { address: target.address, late, timeout: settings.timeout },
          );
          arm(settings.timeout);
          return;
        }
        done = true;
        this.#recordProbe(target, "probe_timeout", startedAt, undefined);
        controller.abort(
          new DOMException(`Health check timed out after ${settings.timeout} ms`, "TimeoutError"),
        );
      }, ms);
    };
    const clearTimer = (): void => {
      if (timer !== undefined) clock.clearTimeout(timer);
      timer = undefined;
    };
    const settle = (ok: boolean, error: unknown): void => {
      clearTimer();
      target.inFlight = undefined;
      if (!done) {
        done = true;
        this.#recordProbe(target, ok ? "probe_ok" : probeFailureReason(error), startedAt, error);
      }
      this.#schedule(target);
    };

    arm(settings.timeout);
    let pending: Promise<void>;
    try {
      pending = Promise.resolve(this.#check(target.hostPort, settings, controller.signal));
    } catch (error) {
      pending = Promise.reject(error);
    }
    // Handled in the same reaction as the check settles: no extra ticks in between.
    const settled = pending.then(() => settle(true, undefined), (error) => settle(false, error));
    target.inFlight = { controller, clearTimer, settled };
  }

  #recordProbe(target: Target, reason: ProbeReason, startedAt: number, error: unknown): void {
    if (this.#closed || target.removed) return;
    const at = this.#clock.now();
    const ok = reason === "probe_ok";
    target.lastResult = { ok, reason, latencyMs: at - startedAt, at };
    if (ok) {
      target.successes++;
      target.failures = 0;
    } else {
      target.successes = 0;
      target.failures++;
      logger.debug("Health check of {address} failed: {reason}", {
        address: target.address,
        reason,
        error,
      });
    }
    const { state, successes, failures, settings } = target;
    if (
      state === "unknown" ||
      (state === "unhealthy" && ok && successes >= settings.rise) ||
      (state === "healthy" && !ok && failures >= settings.fall)
    ) {
      this.#transition(target, ok, reason, error);
    }
    target.first.resolve();
  }

  #transition(target: Target, healthy: boolean, reason: ProbeReason, error: unknown): void {
    const at = this.#clock.now();
    target.state = healthy ? "healthy" : "unhealthy";
    target.reason = reason;
    target.since = at;
    const properties = { address: target.address, reason };
    if (healthy) logger.info("Upstream {address} is healthy: {reason}", properties);
    else {
      // What failed (which certificate check, for probe_tls), for the operator.
      const detail = error instanceof Error ? error.message : undefined;
      logger.warn("Upstream {address} is unhealthy: {reason}", {
        ...properties,
        ...(detail === undefined ? {} : { detail }),
      });
    }
    this.dispatchEvent(new HealthChangeEvent({ address: target.address, healthy, reason, at }));
  }
}

function newTarget(address: string, hostPort: HostPort, settings: HealthCheckSettings): Target {
  return {
    address,
    hostPort,
    settings,
    state: "unknown",
    reason: undefined,
    since: undefined,
    successes: 0,
    failures: 0,
    lastResult: undefined,
    startedAt: undefined,
    timer: undefined,
    inFlight: undefined,
    removed: false,
    first: Promise.withResolvers<void>(),
  };
}
