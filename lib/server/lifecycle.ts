/**
 * The life of a balancer, one balancer or a primary and its workers alike: started
 * once, serving, reloaded one reload at a time (each counted, logged and reported,
 * and failing as a whole), drained once, closed once.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { errorMessage } from "../core/errors.ts";
import type { GaugeSeries } from "../metrics/registry.ts";
import type { Config, TlsMaterial } from "../config/mod.ts";
import type { ReloadRecord } from "./records.ts";
import type { BalancerState, DrainResult } from "./status.ts";

const log = getLogger(["mtlb", "server"]);

/** A configuration and its TLS material, as a reload takes them. */
export interface LoadedConfig {
  /** The validated configuration. */
  config: Config;
  /** The PEM material it names. */
  tls: TlsMaterial;
}

/**
 * What a reload applies: a configuration, or a function deriving one from the
 * configuration in force when the reload's turn comes (reloads run one at a time,
 * so what it derives from is never replaced meanwhile).
 */
export type ReloadSource = LoadedConfig | ((running: LoadedConfig) => Promise<LoadedConfig>);

/**
 * A reload that did not happen: the previous configuration keeps running. The
 * message says why (`cause` holds the original error).
 *
 * @example Usage
 * ```ts ignore
 * import { Balancer, ReloadError } from "@mtlb/mtlb";
 *
 * declare const balancer: Balancer;
 * try {
 *   await balancer.reload();
 * } catch (error) {
 *   if (!(error instanceof ReloadError)) throw error;
 *   // Logged and counted already; the old configuration keeps serving.
 * }
 * ```
 */
export class ReloadError extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ReloadError";
  }
}

/** What a balancer does at each step of its life; {@linkcode Lifecycle} calls them. */
export interface LifecycleSteps {
  /** The config file, for reload records. */
  path(): string;
  /**
   * Reads the configuration again (without `next`) and applies it; throws on
   * anything it will not run, having changed nothing.
   */
  apply(next: ReloadSource | undefined): Promise<void>;
  /** Called after a reload is in force and recorded (`loadedAt` updated). */
  applied?(): void;
  /** Stops accepting and waits for live connections, then closes; the state is `draining`. */
  drain(timeout: number): Promise<DrainResult>;
  /** Closes everything; the state is `closed`. */
  shutdown(): Promise<void>;
}

/** Options of {@linkcode Lifecycle}. */
export interface LifecycleOptions {
  /** Dispatches `"state"` (the new state) and `"reload"` ({@linkcode ReloadRecord}). */
  events: EventTarget;
  /** Wall-clock time, ms since the epoch. */
  wall: () => number;
  /** `mtlb_reloads_total`, `mtlb_config_last_reload_successful`, `mtlb_draining`. */
  metrics: {
    reloads: { success: { inc(): void }; failure: { inc(): void } };
    lastReloadSuccessful: GaugeSeries;
    draining: GaugeSeries;
  };
  /** The balancer's steps. */
  steps: LifecycleSteps;
}

/**
 * The state machine of a balancer: `idle` until started, `serving`, `draining`,
 * `closed`. Reloads run one at a time in call order; a drain and a close happen once
 * (a second call returns the first's promise).
 *
 * @example Usage
 * ```ts
 * import { Lifecycle } from "./lifecycle.ts";
 * import { MetricsRegistry } from "../metrics/registry.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new MetricsRegistry();
 * const gauge = () => registry.gauge({ name: `g${Math.random()}`.replace(".", ""), help: "g" }).labels();
 * const count = { inc() {} };
 * const lifecycle = new Lifecycle({
 *   events: new EventTarget(),
 *   wall: Date.now,
 *   metrics: { reloads: { success: count, failure: count }, lastReloadSuccessful: gauge(), draining: gauge() },
 *   steps: {
 *     path: () => "/etc/mtlb/lb.toml",
 *     apply: () => Promise.reject(new Error("bad TOML")),
 *     drain: () => Promise.resolve({ forced: 0, durationMs: 0 }),
 *     shutdown: () => Promise.resolve(),
 *   },
 * });
 * lifecycle.begin();
 * lifecycle.serving();
 * await assert.rejects(lifecycle.reload(), /Cannot reload: bad TOML/);
 * assert.equal(lifecycle.lastReload?.outcome, "failure");
 * ```
 */
export class Lifecycle {
  #options: LifecycleOptions;
  #state: BalancerState = "idle";
  #started = false;
  #startedAt: number | undefined;
  #loadedAt: number;
  #lastReload: ReloadRecord | undefined;
  #reloading: Promise<void> = Promise.resolve();
  #draining: Promise<DrainResult> | undefined;
  #closed: Promise<void> | undefined;

  /**
   * Creates the state machine, `idle`.
   *
   * @param options Events, clock, metrics and the balancer's steps.
   */
  constructor(options: LifecycleOptions) {
    this.#options = options;
    this.#loadedAt = options.wall();
  }

  /** The state. */
  get state(): BalancerState {
    return this.#state;
  }

  /** When it started serving (wall clock), once it did. */
  get startedAt(): number | undefined {
    return this.#startedAt;
  }

  /** When the configuration in force was loaded (wall clock). */
  get loadedAt(): number {
    return this.#loadedAt;
  }

  /** The latest reload, once there was one. */
  get lastReload(): ReloadRecord | undefined {
    return this.#lastReload === undefined ? undefined : { ...this.#lastReload };
  }

  /** Whether `close()` was called. */
  get closing(): boolean {
    return this.#closed !== undefined;
  }

  /**
   * Marks the start; a balancer starts once.
   *
   * @throws {Error} When it was started before.
   */
  begin(): void {
    if (this.#started) throw new Error("Cannot start balancer: already started");
    this.#started = true;
  }

  /**
   * Throws unless the balancer is still `idle` (a close during the start).
   *
   * @throws {Error} When it is no longer idle.
   */
  assertIdle(): void {
    if (this.#state !== "idle") throw new Error(`Cannot start balancer: it is ${this.#state}`);
  }

  /**
   * Enters `serving` at the end of a start.
   *
   * @throws {Error} When it is no longer idle.
   */
  serving(): void {
    this.assertIdle();
    this.#startedAt = this.#options.wall();
    this.#loadedAt = this.#startedAt;
    this.#set("serving");
  }

  /**
   * Runs a reload after the ones before it: `steps.apply`, then records the outcome
   * (metrics, `lastReload`, a `"reload"` event, and the log for a failure).
   *
   * @param next The configuration to apply, or how to derive it from the one in
   *   force; without it, it is read again.
   * @returns When it is in force.
   * @throws {ReloadError} When the balancer is not serving or the reload fails.
   */
  reload(next?: ReloadSource): Promise<void> {
    const run = this.#reloading.then(() => this.#reload(next));
    this.#reloading = run.catch(() => {});
    return run;
  }

  /**
   * Drains once: `draining`, then `steps.drain`.
   *
   * @param timeout Milliseconds live connections get.
   * @returns How many were closed by force, and how long it took.
   */
  drain(timeout: number): Promise<DrainResult> {
    this.#draining ??= (async () => {
      if (this.#state === "closed" || this.#closed !== undefined) {
        await this.close();
        return { forced: 0, durationMs: 0 };
      }
      this.#set("draining");
      this.#options.metrics.draining.set(1);
      return await this.#options.steps.drain(timeout);
    })();
    return this.#draining;
  }

  /**
   * Closes once: `closed`, then `steps.shutdown`.
   *
   * @returns When everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#set("closed");
      await this.#options.steps.shutdown();
    })();
    return this.#closed;
  }

  async #reload(next: ReloadSource | undefined): Promise<void> {
    const { steps, metrics, wall, events } = this.#options;
    const path = typeof next === "object" ? next.config.path : steps.path();
    try {
      if (this.#state !== "serving") {
        throw new Error(`the balancer is ${this.#state}, not serving`);
      }
      await steps.apply(next);
    } catch (error) {
      const message = errorMessage(error);
      metrics.reloads.failure.inc();
      metrics.lastReloadSuccessful.set(0);
      this.#lastReload = {
        outcome: "failure",
        at: new Date(wall()).toISOString(),
        path,
        error: message,
      };
      log.error("Reload of {path} failed; the running configuration stays: {error}", {
        path,
        error: message,
      });
      events.dispatchEvent(new CustomEvent("reload", { detail: { ...this.#lastReload } }));
      throw new ReloadError(`Cannot reload: ${message}`, { cause: error });
    }
    this.#loadedAt = wall();
    metrics.reloads.success.inc();
    metrics.lastReloadSuccessful.set(1);
    this.#lastReload = { outcome: "success", at: new Date(wall()).toISOString(), path };
    steps.applied?.();
    events.dispatchEvent(new CustomEvent("reload", { detail: { ...this.#lastReload } }));
  }

  #set(state: BalancerState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#options.events.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}
