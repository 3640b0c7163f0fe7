/**
 * All cores: a balancer made of N Deno Workers, each running a {@linkcode Balancer}
 * on the same listeners (`SO_REUSEPORT`, so the kernel spreads connections among
 * them), with least-connection counts and per-client limits shared exactly in one
 * `SharedArrayBuffer` ({@linkcode SharedState}), and health probed and DNS entries
 * looked up once by the primary thread and relayed to every worker.
 *
 * The primary thread loads and checks the configuration, runs the health probes
 * and the DNS look-ups, relays every health change and every new DNS answer, passes passive signals from the workers to its
 * probes, reloads and drains the workers as one, restarts a worker that dies
 * (giving back the connection slots it held), and answers the admin endpoint with
 * status and metrics summed over the workers. Nothing on the path of a connection
 * crosses threads: each worker accepts, handshakes, authorizes and forwards on its
 * own, and touches shared memory only to count.
 *
 * @module
 */
import { clientInGroupScopeKey, groupScopeKey } from "../limiter/client_limiter.ts";
import type { Server as NetServer } from "node:net";
import { getLogger } from "@logtape/logtape";
import type { Config } from "../config/mod.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { formatDuration } from "../core/duration.ts";
import { readFileDescriptorLimit } from "../listener/connection_caps.ts";
import { MetricsRegistry } from "../metrics/registry.ts";
import { BalancerMetrics } from "../server/_balancer_metrics.ts";
import { Lifecycle, type LoadedConfig, type ReloadSource } from "../server/lifecycle.ts";
import { defaultLoad } from "../server/options.ts";
import { configuredResolver } from "../server/_group_dns.ts";
import { logReload, plural } from "../server/reload_log.ts";
import type { BalancerState, DrainResult, ListenerInfo } from "../server/status.ts";
import type { HealthProbe } from "../upstream/health_probe.ts";
import type { OutlierDetector } from "../upstream/outlier_detector.ts";
import { DEFAULT_COLLECT_TIMEOUT, WORKER_MODULE, type WorkerBalancerOptions } from "./options.ts";
import { SharedState } from "./shared_state.ts";
import type { WorkerBalancerStatus } from "./status.ts";
import { PrimaryDns } from "./_primary_dns.ts";
import { type HealthStage, PrimaryHealth } from "./_primary_health.ts";
import { closePlaceholders, type ResolvedPorts, resolvePorts } from "./_resolve_ports.ts";
import { buildStatus } from "./_status_builder.ts";
import { WorkerFigures } from "./_worker_figures.ts";
import { type Slot, WorkerSlots } from "./_worker_slots.ts";

const log = getLogger(["mtlb", "workers"]);

/**
 * The balancer on every core: N Workers serving the same listeners, one primary
 * thread that probes health, reloads, drains and reports for all of them. It has
 * the operations of a {@linkcode Balancer} (`start`, `reload`, `drain`, `close`,
 * `status`, `metrics`, `state`, `config`, `listeners`), so an `AdminServer` serves
 * it unchanged.
 *
 * - Per-client caps, connection rates and least-connection counts are exact across
 *   workers (one `SharedState`): a client capped at 10 gets 10 in all.
 * - Health is probed once, by the primary; every change reaches every worker, and
 *   passive failures seen by any worker count toward the primary's `fall`.
 * - DNS entries (`{ dns = ... }`, `{ srv = ... }`) are looked up once, by the
 *   primary, and every new answer reaches every worker, which applies it as a
 *   `Balancer` does: upstreams that stay keep their counts and health, removed ones
 *   drain, new ones get a shared count and are picked once their first probe (by
 *   the primary) passes. The shared count of an upstream gone for good (no worker
 *   picks it, no connection left) goes to the next new one.
 * - A reload is validated once and applied to every worker with the same material,
 *   all or nothing: if a worker cannot apply it, the workers that did go back to
 *   the running configuration and the reload fails.
 * - A worker that dies is logged, its connections are lost, the connection slots it
 *   held are given back (each worker keeps a ledger of them in shared memory), and
 *   it is restarted: at once, then with a growing delay (up to 30 s) if it keeps
 *   dying soon after starting.
 * - `status()` and `metrics` sum counters and additive gauges over the workers and
 *   take health, probe latency, reloads and the config time from the primary; the
 *   `/metrics` families are exactly those of a single `Balancer`. Counts a dying
 *   worker made since the previous collection are lost.
 *
 * Events (plain `CustomEvent`s): `"state"` ({@linkcode BalancerState}), `"reload"`
 * ({@linkcode ReloadRecord}), `"deny"` (`DenyRecord`, relayed from the workers in
 * batches), `"worker_exit"` ({@linkcode WorkerExitRecord}) and `"worker_start"`
 * ({@linkcode WorkerStartRecord}).
 *
 * Deno needs read permission for {@linkcode WORKER_MODULES_ROOT} (mtlb's `lib/`) to
 * load the workers; `main.ts permissions` includes it.
 *
 * @example Usage
 * ```ts ignore
 * import { AdminServer, WorkerBalancer } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * await using balancer = new WorkerBalancer({
 *   config,
 *   tls: await loadTlsMaterial(config),
 *   workers: navigator.hardwareConcurrency,
 * });
 * await balancer.start();
 * await using _admin = AdminServer.start(balancer, { listen: "127.0.0.1:9090" });
 * Deno.addSignalListener("SIGHUP", () => balancer.reload().catch(() => {}));
 * ```
 */
export class WorkerBalancer extends EventTarget implements AsyncDisposable {
  #loaded: LoadedConfig;
  /** What the workers run: `#loaded` with listeners on port 0 bound to their port. */
  #effective: LoadedConfig;
  #count: number;
  /** The open-files limit the default connection caps derive from. */
  #fileDescriptors: number | undefined;
  #load: (path: string) => Promise<LoadedConfig>;
  #clock: Clock;
  #wall: () => number;
  #shared: SharedState;
  #health: PrimaryHealth;
  #dns: PrimaryDns;
  /** Sets of upstreams sent to the workers (starts, reloads, DNS answers). */
  #epoch = 0;
  /** Upstreams no group uses, with the epoch from which no worker picks them. */
  #retiring = new Map<string, number>();
  /** `group + " " + configured address` of a port 0 listener, to the address it got. */
  #ports = new Map<string, string>();
  #slots: WorkerSlots;
  #registry = new MetricsRegistry();
  #metrics: BalancerMetrics;
  #collect: Disposable;
  #figures: WorkerFigures;
  #life: Lifecycle;
  /** Reloads and restarts, one at a time. */
  #queue: Promise<void> = Promise.resolve();

  /**
   * Creates the balancer; nothing runs until {@linkcode WorkerBalancer.start}.
   *
   * @param options The configuration, TLS material, worker count and injectables.
   * @throws {RangeError} When `workers` is not a positive integer.
   */
  constructor(options: WorkerBalancerOptions) {
    super();
    const count = options.workers ?? options.config.server.workers ??
      navigator.hardwareConcurrency;
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new RangeError(
        `Cannot create worker balancer: "workers" must be a positive integer, received ${count}`,
      );
    }
    this.#loaded = { config: options.config, tls: options.tls };
    this.#effective = this.#loaded;
    this.#count = count;
    this.#load = options.load ?? defaultLoad;
    this.#clock = options.clock ?? systemClock;
    this.#wall = options.wallClock ?? Date.now;
    this.#fileDescriptors = options.fileDescriptorLimit ?? readFileDescriptorLimit();
    const sharedOptions = options.shared ?? {};
    this.#shared = new SharedState(sharedOptions);
    this.#metrics = new BalancerMetrics(this.#registry);
    this.#figures = new WorkerFigures(
      this.#registry,
      options.collectTimeout ?? DEFAULT_COLLECT_TIMEOUT,
    );
    this.#dns = new PrimaryDns({
      resolver: options.resolver ?? configuredResolver(() => this.#loaded.config.server),
      clock: this.#clock,
      metrics: this.#metrics,
      // Answers take turns with reloads and restarts: one that comes during a reload
      // is relayed once it ends.
      onChange: (group) => {
        this.#queue = this.#queue.then(() => this.#relayDns(group)).catch((error) => {
          log.error("Cannot relay the DNS answer of group {group}: {error}", { group, error });
        });
      },
    });
    this.#health = new PrimaryHealth({
      check: options.healthCheck,
      clock: this.#clock,
      metrics: this.#metrics,
      relay: (message) => this.#slots.broadcast(message),
      upstreams: (group) => this.#dns.upstreams(group),
      nameOf: (group, address) => this.#dns.dnsName(group, address),
    });
    this.#slots = new WorkerSlots({
      count,
      module: options.module ?? WORKER_MODULE,
      clock: this.#clock,
      wall: this.#wall,
      shared: this.#shared,
      sharedOptions,
      fileDescriptorLimit: this.#fileDescriptors,
      logging: options.logging,
      events: this,
      running: () => this.#effective,
      health: () => this.#health.reports(),
      dns: () => ({ reports: this.#dns.reports(), epoch: this.#epoch }),
      state: () => this.#life.state,
      passive: (record) => this.#health.passive(record),
      retired: (last) => this.#figures.keep(last),
      // Restarts take turns with reloads.
      enqueue: (task) => {
        this.#queue = this.#queue.then(task);
      },
    });
    this.#collect = this.#registry.onCollect(() => this.#collectMetrics());
    this.#life = new Lifecycle({
      events: this,
      wall: this.#wall,
      metrics: this.#metrics,
      steps: {
        path: () => this.#loaded.config.path,
        // Reloads and worker restarts take turns.
        apply: (next) => {
          const run = this.#queue.then(() => this.#reload(next));
          this.#queue = run.catch(() => {});
          return run;
        },
        applied: () => this.#metrics.configLoaded.set(this.#life.loadedAt / 1000),
        drain: (timeout) => this.#drain(timeout),
        shutdown: () => this.#shutdown(),
      },
    });
  }

  /**
   * Looks up the DNS entries and probes health once, then starts every worker and
   * waits until all listen.
   *
   * @returns When every worker serves every listener.
   * @throws {DnsLookupError} When a DNS entry failed or found no upstream.
   * @throws {SharedStateError} When the config has more upstreams or clients than
   *   the shared state holds.
   * @throws {Error} When a worker cannot start (an address in use, a bad CRL...):
   *   the first failure, with the `code`, `address` and `port` of a bind error.
   */
  async start(): Promise<void> {
    this.#life.begin();
    const { config } = this.#loaded;
    let placeholders: NetServer[] = [];
    try {
      await this.#dns.start(config);
      this.#shared.assign(this.#upstreamsOf(config), limiterKeysOf(config));
      await this.#health.start(config, this.#loaded.tls);
      this.#life.assertIdle();
      const resolved = await resolvePorts(config, this.#ports);
      placeholders = resolved.placeholders;
      this.#effective = { config: resolved.config, tls: this.#loaded.tls };
      this.#ports = resolved.ports;
      await this.#slots.start();
    } catch (error) {
      await this.close();
      throw error;
    } finally {
      await closePlaceholders(placeholders);
    }
    this.#life.serving();
    this.#metrics.configLoaded.set(this.#life.loadedAt / 1000);
    log.info(`Started {workers} ${plural(this.#count, "worker")}`, { workers: this.#count });
  }

  /** The life-cycle state. */
  get state(): BalancerState {
    return this.#life.state;
  }

  /** The configuration in use (the latest one a reload applied). */
  get config(): Config {
    return this.#loaded.config;
  }

  /** The number of workers. */
  get workers(): number {
    return this.#count;
  }

  /** The registry `/metrics` renders: the workers' figures, summed, and the primary's. */
  get metrics(): MetricsRegistry {
    return this.#registry;
  }

  /**
   * The addresses bound, in configuration order (shared listener first).
   *
   * @returns One entry per listener, as every worker binds them.
   */
  listeners(): ListenerInfo[] {
    return this.#slots.listeners.map((l) => ({ ...l, address: { ...l.address } }));
  }

  /**
   * The health probe of a group.
   *
   * @param group The group name.
   * @returns The probe, or `undefined` for an unknown group.
   */
  probe(group: string): HealthProbe | undefined {
    return this.#health.probe(group);
  }

  /**
   * The outlier detection of a group: one for all workers, fed by their passive
   * signals.
   *
   * @param group The group name.
   * @returns The detector, or `undefined` for an unknown group.
   */
  outlier(group: string): OutlierDetector | undefined {
    return this.#health.outlier(group);
  }

  /**
   * A JSON-ready snapshot, as {@linkcode Balancer.status} gives, summed over the
   * workers, with each worker's share in `workers`. It asks every worker for its
   * figures and waits (blocking this thread) up to the collect timeout for them.
   *
   * @returns A fresh object.
   */
  status(): WorkerBalancerStatus {
    const figures = this.#figures.gather(this.#slots.all);
    return buildStatus({
      config: this.#loaded.config,
      life: this.#life,
      slots: this.#slots.all,
      figures,
      retired: this.#figures.retired,
      health: this.#health,
      dns: this.#dns,
      listeners: this.#slots.listeners,
      fileDescriptorLimit: this.#fileDescriptors,
      upstreamActive: (address) => this.#upstreamActive(address),
      now: this.#clock.now(),
      wall: this.#wall(),
    });
  }

  /**
   * Applies a new configuration to every worker, all or nothing, without dropping a
   * connection; see {@linkcode Balancer.reload} for what a reload changes. The
   * material is read and checked once, here; new upstreams and groups are probed
   * before any worker uses them; listeners on port 0 get one port for all workers.
   * If a worker cannot apply it, the workers that did go back to the running
   * configuration. Reloads and worker restarts run one at a time.
   *
   * @param next The configuration and TLS material, or how to derive them from those
   *   in force; without it, they are read again from the config file with the `load`
   *   option.
   * @returns When every worker uses the new configuration.
   * @throws {ReloadError} When the balancer is not serving, or the configuration
   *   cannot be read or applied by every worker; the old one keeps running.
   */
  reload(next?: ReloadSource): Promise<void> {
    return this.#life.reload(next);
  }

  /**
   * Drains every worker: they stop accepting (`/healthz` answers 503 as soon as
   * this is called) and their live connections get up to `timeout` milliseconds;
   * then everything closes as {@linkcode WorkerBalancer.close} does. Calling it
   * again returns the same drain.
   *
   * @param timeout Milliseconds to wait; `[server] drain_timeout` when omitted.
   * @returns The connections closed by force over all workers, and how long it took.
   */
  drain(timeout: number = this.#loaded.config.server.drainTimeout): Promise<DrainResult> {
    return this.#life.drain(timeout);
  }

  /**
   * Closes every worker (live connections are ended) and stops the probes.
   *
   * @returns When every worker thread is gone.
   */
  close(): Promise<void> {
    return this.#life.close();
  }

  /**
   * Same as {@linkcode WorkerBalancer.close}.
   *
   * @returns When every worker thread is gone.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #reload(next: ReloadSource | undefined): Promise<void> {
    if (this.#life.state !== "serving") {
      throw new Error(`the balancer is ${this.#life.state}, not serving`);
    }
    const loaded = typeof next === "function"
      ? await next(this.#loaded)
      : next ?? await this.#load(this.#loaded.config.path);
    const previous = this.#loaded;
    await this.#apply(loaded);
    logReload(previous.config, loaded.config, previous.tls, loaded.tls);
  }

  async #apply(loaded: LoadedConfig): Promise<void> {
    const { config } = loaded;
    const previous = this.#loaded.config;
    // Look up new DNS entries, then probe new upstreams and groups; keep probing the
    // old ones until the end.
    await this.#dns.prepare(config);
    let health: HealthStage | undefined;
    let resolved: ResolvedPorts | undefined;
    try {
      this.#reclaimSlots(config);
      this.#shared.assign(this.#upstreamsOf(config), limiterKeysOf(config));
      health = this.#health.stage(config, previous, loaded.tls);
      await health.ready();
      if (this.#life.state !== "serving") {
        throw new Error(`the balancer started ${this.#life.state}`);
      }
      resolved = await resolvePorts(config, this.#ports);
      const material: LoadedConfig = { config: resolved.config, tls: loaded.tls };
      const reload = {
        loaded: material,
        health: health.reports(),
        dns: this.#dns.reports(),
        epoch: ++this.#epoch,
      };
      const live = this.#slots.all.filter((s) => s.state === "serving");
      const results = await Promise.all(live.map((s) => this.#slots.reload(s, reload)));
      const failed = live.flatMap((slot, i) => {
        const error = results[i]!.error;
        return error === undefined ? [] : [{ slot, error }];
      });
      if (failed.length > 0) {
        await this.#rollBack(
          live.filter((_, i) => results[i]!.error === undefined && !results[i]!.exited),
        );
        throw new Error(describeFailures(failed));
      }
      this.#dns.commit(config);
      health.commit();
      this.#loaded = loaded;
      this.#effective = material;
      this.#ports = resolved.ports;
      const answered = results.find((r) => r.error === undefined && !r.exited);
      if (answered !== undefined) this.#slots.listeners = answered.listeners;
    } catch (error) {
      this.#dns.discard();
      await health?.revert();
      throw error;
    } finally {
      this.#markRetiring();
      await closePlaceholders(resolved?.placeholders ?? []);
    }
  }

  /**
   * A DNS entry of a group found another set: new upstreams get shared counts, every
   * worker applies the set, and the primary probes the new ones (each worker picks
   * one once its first probe passes, as the health relayed says).
   */
  #relayDns(group: string): Promise<void> {
    const config = this.#loaded.config;
    const groupConfig = config.groups.get(group);
    if (groupConfig === undefined || this.#life.state === "closed") return Promise.resolve();
    try {
      this.#reclaimSlots(config);
      this.#shared.assign(this.#upstreamsOf(config), []);
    } catch (error) {
      log.error("Cannot apply the DNS answer of group {group}: {error}", { group, error });
      return Promise.resolve();
    }
    this.#slots.broadcast({
      type: "dns",
      epoch: ++this.#epoch,
      group,
      report: this.#dns.report(group),
      shared: this.#shared.init,
    });
    this.#health.retarget(groupConfig);
    this.#markRetiring();
    return Promise.resolve();
  }

  /** Every upstream of a configuration: static ones and those its DNS entries found. */
  #upstreamsOf(config: Config): string[] {
    return [...config.groups.values()].flatMap((g) => this.#dns.upstreams(g).map((u) => u.address));
  }

  /** Notes the upstreams no group uses any more, from the latest set sent on. */
  #markRetiring(): void {
    const wanted = new Set(this.#upstreamsOf(this.#loaded.config));
    for (const address of this.#shared.upstreamAddresses()) {
      if (wanted.has(address)) this.#retiring.delete(address);
      else if (!this.#retiring.has(address)) this.#retiring.set(address, this.#epoch);
    }
  }

  /**
   * Gives back the shared counts of upstreams gone for good: unused by `config`,
   * dropped by every running worker, and with no connection left.
   */
  #reclaimSlots(config: Config): void {
    const wanted = new Set(this.#upstreamsOf(config));
    const applied = this.#slots.applied;
    for (const [address, epoch] of this.#retiring) {
      if (wanted.has(address)) this.#retiring.delete(address);
      else if (applied >= epoch && this.#shared.release(address)) this.#retiring.delete(address);
    }
  }

  /** Puts the running configuration back in workers that took a failed reload. */
  async #rollBack(slots: Slot[]): Promise<void> {
    if (slots.length === 0 || this.#life.state !== "serving") return;
    this.#dns.discard();
    const reload = {
      loaded: this.#effective,
      health: this.#health.reports(),
      dns: this.#dns.reports(),
      epoch: ++this.#epoch,
    };
    const results = await Promise.all(slots.map((slot) => this.#slots.reload(slot, reload)));
    await Promise.all(slots.map(async (slot, i) => {
      const error = results[i]!.error;
      if (error === undefined || slot.worker === undefined) return;
      // It runs neither configuration reliably: close it and start it again.
      log.error(
        "Worker {index} cannot go back to the running configuration: {error}; restarting it",
        { index: slot.index, error },
      );
      await this.#slots.close(slot);
      this.#slots.retire(slot);
      if (this.#life.state === "serving") this.#slots.scheduleRestart(slot);
    }));
  }

  async #drain(timeout: number): Promise<DrainResult> {
    const started = this.#clock.now();
    this.#slots.cancelRestarts();
    await this.#slots.settleStarts();
    const { stopped, drained } = this.#slots.drain(timeout);
    // Logged once every worker stopped accepting.
    await stopped;
    const open = this.#slots.open;
    log.info(
      `Draining: stopped accepting; {open} ${plural(open, "connection")} open in {workers} ${
        plural(this.#count, "worker")
      }, waiting up to {timeout}`,
      { open, workers: this.#count, timeout: formatDuration(timeout) },
    );
    const results = await drained;
    await this.close();
    const forced = results.reduce((sum, r) => sum + r.forced, 0);
    const durationMs = Math.round(this.#clock.now() - started);
    log.info("Drained in {durationMs} ms", { durationMs, forced, workers: this.#count });
    return { forced, durationMs };
  }

  async #shutdown(): Promise<void> {
    this.#slots.cancelRestarts();
    await this.#slots.settleStarts();
    // Keep the final figures: status() still answers after close.
    this.#figures.gather(this.#slots.all);
    await this.#slots.closeAll();
    this.#dns.close();
    await this.#health.close();
    this.#collect[Symbol.dispose]();
  }

  #upstreamActive(address: string): number {
    try {
      return this.#shared.upstreamCounts().get(address);
    } catch {
      return 0;
    }
  }

  #collectMetrics(): void {
    this.#figures.merge(this.#figures.gather(this.#slots.all).values());
    this.#health.updateMetrics(this.#loaded.config.groups.values());
    this.#dns.collect();
  }
}

/**
 * The limiter keys that need a shared slot: every client, each group with a total cap,
 * and each client's share of a group it has `per_group` limits in.
 */
function limiterKeysOf(config: Config): string[] {
  const keys = [...config.clients.keys()];
  for (const group of config.groups.values()) {
    if (group.maxConnections !== undefined) keys.push(groupScopeKey(group.name));
  }
  for (const client of config.clients.values()) {
    for (const group of Object.keys(client.perGroup ?? {})) {
      keys.push(clientInGroupScopeKey(client.name, group));
    }
  }
  return keys;
}

function describeFailures(failed: { slot: Slot; error: string }[]): string {
  const reasons = new Set(failed.map((f) => f.error));
  if (reasons.size === 1) return [...reasons][0]!;
  return failed.map((f) => `worker ${f.slot.index}: ${f.error}`).join("; ");
}
