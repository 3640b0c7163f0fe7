/**
 * All cores: a balancer made of N Deno Workers, each running a {@linkcode Balancer}
 * on the same listeners (`SO_REUSEPORT`, so the kernel spreads connections among
 * them), with least-connection counts and per-client limits shared exactly in one
 * `SharedArrayBuffer` ({@linkcode SharedState}), and health probed once by the
 * primary thread and relayed to every worker.
 *
 * The primary thread loads and checks the configuration, runs the health probes,
 * relays every health change, passes passive signals from the workers to its
 * probes, reloads and drains the workers as one, restarts a worker that dies
 * (giving back the connection slots it held), and answers the admin endpoint with
 * status and metrics summed over the workers. Nothing on the path of a connection
 * crosses threads: each worker accepts, handshakes, authorizes and forwards on its
 * own, and touches shared memory only to count.
 *
 * @module
 */
import { connectionCaps, readFileDescriptorLimit } from "../listener/connection_caps.ts";
import { formatDuration } from "../core/duration.ts";
import type { Server as NetServer } from "node:net";

import { getLogger } from "@logtape/logtape";
import { formatHostPort } from "../core/address.ts";

import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import type { Config } from "../config/mod.ts";
import type { HealthProbe } from "../upstream/health_probe.ts";
import type { OutlierDetector } from "../upstream/outlier_detector.ts";
import { MetricsRegistry } from "../metrics/registry.ts";
import { logReload, plural } from "../server/reload_log.ts";
import { defaultLoad } from "../server/options.ts";
import { Lifecycle, type LoadedConfig } from "../server/lifecycle.ts";
import {
  addEjection,
  addProbeState,
  type BalancerState,
  type ClientState,
  type DrainResult,
  type GroupState,
  type ListenerInfo,
  type UpstreamState,
} from "../server/status.ts";
import { SharedState, type SharedStateOptions } from "./shared_state.ts";
import { type ReleasedSlots, type SharedCount, WorkerLedger } from "./ledger.ts";
import { BalancerMetrics } from "../server/_balancer_metrics.ts";
import { errorFrom, type FromWorker, type GroupHealthReports, type ToWorker } from "./_messages.ts";
import { errorMessage } from "../core/errors.ts";
import type { WorkerLogging } from "./worker_logging.ts";
import { DEFAULT_COLLECT_TIMEOUT, WORKER_MODULE, type WorkerBalancerOptions } from "./options.ts";
import type { WorkerBalancerStatus, WorkerLifeState, WorkerStatus } from "./status.ts";
import type { WorkerExitRecord } from "./records.ts";
import { PrimaryHealth } from "./_primary_health.ts";
import { addAll, type Figures, WorkerFigures } from "./_worker_figures.ts";
import { closePlaceholders, type ResolvedPorts, resolvePorts } from "./_resolve_ports.ts";

const log = getLogger(["mtlb", "workers"]);

/** A worker that lived this long before it died is restarted at once, ms. */
const STABLE_AFTER = 60_000;
/** The longest wait before restarting a worker that keeps dying, ms. */
const MAX_RESTART_DELAY = 30_000;
/** How long closing waits for a worker to close its sockets before terminating it, ms. */
const CLOSE_TIMEOUT = 10_000;

interface Slot {
  index: number;
  state: WorkerLifeState;
  worker: Worker | undefined;
  ledger: SharedArrayBuffer;
  reply: MessagePort | undefined;
  flag: Int32Array;
  restarts: number;
  /** Deaths in a row, each soon after a start. */
  streak: number;
  /** Primary clock time it last started serving. */
  startedAt: number | undefined;
  startedWall: number | undefined;
  starting: PromiseWithResolvers<ListenerInfo[]> | undefined;
  reloads: Map<
    number,
    (result: { error?: string; exited?: true; listeners: ListenerInfo[] }) => void
  >;
  /** Settled once the worker stopped accepting, in a drain. */
  draining: PromiseWithResolvers<void> | undefined;
  drained: PromiseWithResolvers<DrainResult> | undefined;
  closed: PromiseWithResolvers<void> | undefined;
  restartTimer: TimerId | undefined;
  /** The latest figures it answered with. */
  last: Figures | undefined;
}

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
  #logging: WorkerLogging | undefined;
  #sharedOptions: SharedStateOptions;
  #module: URL;
  #shared: SharedState;
  /** Open client connections of every worker: what `max_connections` caps. */
  #openCount = new Int32Array(new SharedArrayBuffer(4));
  #connections: SharedCount = {
    add: (delta: number): number => Atomics.add(this.#openCount, 0, delta) + delta,
  };
  #health: PrimaryHealth;
  /** `group + " " + configured address` of a port 0 listener, to the address it got. */
  #ports = new Map<string, string>();
  #slots: Slot[] = [];
  #listeners: ListenerInfo[] = [];
  #registry = new MetricsRegistry();
  #metrics: BalancerMetrics;
  #collect: Disposable;
  #figures: WorkerFigures;
  #life: Lifecycle;
  /** Reloads and restarts, one at a time. */
  #queue: Promise<void> = Promise.resolve();
  #nextId = 0;

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
    this.#logging = options.logging;
    this.#sharedOptions = options.shared ?? {};
    this.#module = options.module ?? WORKER_MODULE;
    this.#fileDescriptors = options.fileDescriptorLimit ?? readFileDescriptorLimit();
    this.#shared = new SharedState(this.#sharedOptions);
    this.#metrics = new BalancerMetrics(this.#registry);
    this.#figures = new WorkerFigures(
      this.#registry,
      options.collectTimeout ?? DEFAULT_COLLECT_TIMEOUT,
    );
    this.#health = new PrimaryHealth({
      check: options.healthCheck,
      clock: this.#clock,
      metrics: this.#metrics,
      relay: (message) => {
        for (const slot of this.#slots) this.#send(slot, message);
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
   * Probes health once, then starts every worker and waits until all listen.
   *
   * @returns When every worker serves every listener.
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
      this.#shared.assign(upstreamsOf(config), config.clients.keys());
      await this.#health.start(config);
      this.#life.assertIdle();
      const resolved = await resolvePorts(config, this.#ports);
      placeholders = resolved.placeholders;
      this.#effective = { config: resolved.config, tls: this.#loaded.tls };
      this.#ports = resolved.ports;
      for (let index = 1; index <= this.#count; index++) this.#slots.push(newSlot(index));
      const started = await Promise.allSettled(this.#slots.map((slot) => this.#spawn(slot)));
      const failure = started.find((r) => r.status === "rejected");
      if (failure !== undefined) throw failure.reason;
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
    return this.#listeners.map((l) => ({ ...l, address: { ...l.address } }));
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
    const figures = this.#figures.gather(this.#slots);
    const now = this.#clock.now();
    const wall = this.#wall();
    const iso = (monotonic: number): string => new Date(wall - (now - monotonic)).toISOString();
    const config = this.#loaded.config;
    const statuses = [...figures.values()].map((f) => f.status);
    const retired = this.#figures.retired;
    const denied = new Map(retired.denied);
    const handshakeFailures = new Map(retired.handshakeFailures);
    const caps = connectionCaps(config.server, this.#fileDescriptors);
    let open = 0;
    let handshaking = 0;
    let active = 0;
    let accepted = retired.accepted;
    for (const status of statuses) {
      open += status.connections.open;
      handshaking += status.connections.handshaking;
      active += status.connections.active;
      accepted += status.connections.accepted;
      addAll(denied, status.connections.denied);
      addAll(handshakeFailures, status.connections.handshakeFailures);
    }
    const groups: GroupState[] = [];
    for (const groupConfig of config.groups.values()) {
      const name = groupConfig.name;
      const health = new Map(this.#health.probe(name)?.snapshot().map((h) => [h.address, h]));
      const outlier = this.#health.outlier(name);
      const outliers = new Map(outlier?.snapshot().map((o) => [o.address, o]));
      const past = retired.groups.get(name);
      const entry: GroupState = {
        name,
        accepted: past?.accepted ?? 0,
        panic: this.#health.panic(groupConfig),
        bytesFromClient: past?.bytesFromClient ?? 0,
        bytesFromUpstream: past?.bytesFromUpstream ?? 0,
        upstreams: [],
      };
      const upstreams = new Map<string, UpstreamState>();
      for (const status of statuses) {
        const group = status.groups.find((g) => g.name === name);
        if (group === undefined) continue;
        entry.accepted += group.accepted;
        entry.bytesFromClient += group.bytesFromClient;
        entry.bytesFromUpstream += group.bytesFromUpstream;
        for (const u of group.upstreams) {
          const seen = upstreams.get(u.address);
          if (seen === undefined) upstreams.set(u.address, { ...u });
          else seen.accepted += u.accepted;
        }
      }
      // Configured upstreams first, then removed ones some worker still forwards to.
      const order = [
        ...groupConfig.upstreams.map((u) => u.address),
        ...[...upstreams.keys()].filter((a) => !groupConfig.upstreams.some((u) => u.address === a)),
      ];
      for (const address of order) {
        const seen = upstreams.get(address);
        const configured = groupConfig.upstreams.find((u) => u.address === address);
        const removed = configured === undefined;
        const h = removed ? undefined : health.get(address);
        const state: UpstreamState = {
          address,
          weight: configured?.weight ?? seen?.weight ?? 1,
          active: seen?.active ?? this.#upstreamActive(address),
          accepted: seen?.accepted ?? 0,
          healthy: !removed && h?.state === "healthy",
          state: h?.state ?? "unknown",
        };
        if (removed) state.removed = true;
        addProbeState(state, h, iso);
        if (!removed) addEjection(state, outliers.get(address), iso);
        entry.upstreams.push(state);
      }
      if (groupConfig.listen !== undefined) entry.listen = groupConfig.listen;
      if (groupConfig.proxyProtocol !== undefined) entry.proxyProtocol = "v2";
      groups.push(entry);
    }
    const clients: ClientState[] = [...config.clients.values()].map((c) => ({
      name: c.name,
      groups: [...c.groups],
      active: statuses.reduce(
        (sum, s) => sum + (s.clients.find((x) => x.name === c.name)?.active ?? 0),
        0,
      ),
      maxConnections: c.maxConnections ?? config.limits.maxConnectionsPerClient,
    }));
    const first = statuses[0];
    const status: WorkerBalancerStatus = {
      state: this.#life.state,
      config: { path: config.path, loadedAt: new Date(this.#life.loadedAt).toISOString() },
      connections: {
        open,
        handshaking,
        max: caps.maxConnections,
        maxHandshakes: caps.maxHandshakes,
        active,
        accepted,
        denied: Object.fromEntries(denied),
        handshakeFailures: Object.fromEntries(handshakeFailures),
      },
      listeners: first?.listeners ??
        this.#listeners.map((l) => {
          const address = formatHostPort(l.address);
          return l.group === undefined ? { address } : { address, group: l.group };
        }),
      groups,
      clients,
      certificates: first === undefined ? {} : { ...first.certificates },
      workers: this.#slots.map((slot) => {
        const worker: WorkerStatus = {
          index: slot.index,
          state: slot.state,
          restarts: slot.restarts,
        };
        if (slot.startedWall !== undefined) {
          worker.startedAt = new Date(slot.startedWall).toISOString();
        }
        const own = figures.get(slot)?.status.connections;
        if (own !== undefined) {
          worker.connections = { open: own.open, active: own.active, accepted: own.accepted };
        }
        return worker;
      }),
    };
    const { startedAt, lastReload } = this.#life;
    if (startedAt !== undefined) status.startedAt = new Date(startedAt).toISOString();
    if (lastReload !== undefined) status.lastReload = lastReload;
    return status;
  }

  /**
   * Applies a new configuration to every worker, all or nothing, without dropping a
   * connection; see {@linkcode Balancer.reload} for what a reload changes. The
   * material is read and checked once, here; new upstreams and groups are probed
   * before any worker uses them; listeners on port 0 get one port for all workers.
   * If a worker cannot apply it, the workers that did go back to the running
   * configuration. Reloads and worker restarts run one at a time.
   *
   * @param next The configuration and TLS material; without it, they are read again
   *   from the config file with the `load` option.
   * @returns When every worker uses the new configuration.
   * @throws {ReloadError} When the balancer is not serving, or the configuration
   *   cannot be read or applied by every worker; the old one keeps running.
   */
  reload(next?: LoadedConfig): Promise<void> {
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

  // -------------------------------------------------------------------------------------
  // Workers

  /** Starts the slot's worker on the running configuration; resolves once it serves. */
  #spawn(slot: Slot): Promise<ListenerInfo[]> {
    const worker = new Worker(this.#module, {
      type: "module",
      name: `mtlb worker ${slot.index}`,
    });
    const channel = new MessageChannel();
    slot.worker = worker;
    slot.reply = channel.port1;
    slot.flag = new Int32Array(new SharedArrayBuffer(4));
    slot.ledger = WorkerLedger.allocate(this.#sharedOptions);
    slot.state = "starting";
    slot.last = undefined;
    const starting = Promise.withResolvers<ListenerInfo[]>();
    slot.starting = starting;
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      if (slot.worker === worker) this.#onMessage(slot, event.data);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      if (slot.worker === worker) this.#onDeath(slot, event.message || "unknown error");
    };
    worker.onmessageerror = () => {
      log.error("Worker {index} sent a message that could not be read", { index: slot.index });
    };
    const message: ToWorker = {
      type: "start",
      index: slot.index,
      loaded: this.#effective,
      shared: this.#shared.init,
      ledger: slot.ledger,
      connections: this.#openCount.buffer as SharedArrayBuffer,
      fileDescriptorLimit: this.#fileDescriptors,
      workers: this.#count,
      health: this.#health.reports(),
      logging: this.#logging,
      reply: channel.port2,
      flag: slot.flag.buffer as SharedArrayBuffer,
    };
    worker.postMessage(message, [channel.port2]);
    return starting.promise;
  }

  #onMessage(slot: Slot, message: FromWorker): void {
    switch (message.type) {
      case "started":
        slot.state = "serving";
        slot.startedAt = this.#clock.now();
        slot.startedWall = this.#wall();
        this.#listeners = message.listeners;
        slot.starting?.resolve(message.listeners);
        slot.starting = undefined;
        return;
      case "failed":
        slot.starting?.reject(errorFrom(message.error));
        slot.starting = undefined;
        return;
      case "reloaded": {
        const settle = slot.reloads.get(message.id);
        slot.reloads.delete(message.id);
        settle?.(
          message.error === undefined
            ? { listeners: message.listeners }
            : { listeners: message.listeners, error: message.error },
        );
        return;
      }
      case "passive":
        this.#health.passive(message.record);
        return;
      case "denials":
        for (const { type, record } of message.records) this.#emit(type, record);
        return;
      case "draining":
        slot.draining?.resolve();
        return;
      case "drained":
        slot.drained?.resolve(message.result);
        return;
      case "closed":
        slot.closed?.resolve();
        return;
    }
  }

  /** A worker died: end its thread, give back its slots, restart it unless stopping. */
  #onDeath(slot: Slot, error: string): void {
    const wasServing = slot.state === "serving";
    const released = this.#retire(slot);
    const failure = new Error(`Worker ${slot.index} died: ${error}`);
    slot.starting?.reject(failure);
    slot.starting = undefined;
    for (const settle of slot.reloads.values()) settle({ exited: true, listeners: [] });
    slot.reloads.clear();
    slot.drained?.resolve({ forced: 0, durationMs: 0 });
    slot.closed?.resolve();
    const record: WorkerExitRecord = { index: slot.index, error, released };
    if (wasServing && this.#life.state === "serving") {
      record.restartInMs = this.#scheduleRestart(slot);
      log.error(
        "Worker {index} died: {error}; its {connections} connections are lost, their {upstreams} upstream and {clients} client slots given back; restarting it in {delay} ms",
        { index: slot.index, error, ...released, delay: record.restartInMs },
      );
    } else {
      slot.state = this.#life.state === "serving" ? slot.state : "closed";
      log.error("Worker {index} died: {error}", { index: slot.index, error, ...released });
    }
    this.#emit("worker_exit", record);
  }

  /**
   * Terminates the slot's worker, gives back the connection slots its ledger holds,
   * and keeps its counters in the retired sums. Only for a worker that runs no more
   * code on its own: one that died, failed to start, or closed its balancer.
   */
  #retire(slot: Slot): ReleasedSlots {
    slot.worker?.terminate();
    slot.worker = undefined;
    slot.reply?.close();
    slot.reply = undefined;
    const released = new WorkerLedger(slot.ledger, this.#shared.init).reclaim({
      counts: this.#shared.upstreamCounts(),
      store: this.#shared.limiterStore(),
      connections: this.#connections,
      now: performance.timeOrigin + performance.now(),
    });
    if (slot.last !== undefined) this.#figures.keep(slot.last);
    slot.last = undefined;
    slot.state = "restarting";
    slot.startedWall = undefined;
    return released;
  }

  /** Schedules a restart: at once after a long life, then 1 s, 2 s, ... up to 30 s. */
  #scheduleRestart(slot: Slot): number {
    const now = this.#clock.now();
    if (slot.startedAt !== undefined && now - slot.startedAt >= STABLE_AFTER) slot.streak = 0;
    slot.streak++;
    const delay = slot.streak === 1
      ? 0
      : Math.min(MAX_RESTART_DELAY, 1000 * 2 ** (slot.streak - 2));
    slot.state = "restarting";
    slot.restartTimer = this.#clock.setTimeout(() => {
      slot.restartTimer = undefined;
      this.#queue = this.#queue.then(() => this.#restart(slot));
    }, delay);
    return delay;
  }

  async #restart(slot: Slot): Promise<void> {
    if (this.#life.state !== "serving" || slot.state !== "restarting") return;
    try {
      await this.#spawn(slot);
    } catch (error) {
      if (slot.worker !== undefined) this.#retire(slot);
      if (this.#life.state !== "serving") {
        slot.state = "closed";
        return;
      }
      const delay = this.#scheduleRestart(slot);
      log.error("Worker {index} could not restart: {error}; trying again in {delay} ms", {
        index: slot.index,
        error: errorMessage(error),
        delay,
      });
      return;
    }
    slot.restarts++;
    log.info("Worker {index} restarted", { index: slot.index, restarts: slot.restarts });
    this.#emit("worker_start", { index: slot.index, restarts: slot.restarts });
  }

  #send(slot: Slot, message: ToWorker): void {
    slot.worker?.postMessage(message);
  }

  #reloadWorker(
    slot: Slot,
    loaded: LoadedConfig,
    health: GroupHealthReports,
  ): Promise<{ error?: string; exited?: true; listeners: ListenerInfo[] }> {
    if (slot.worker === undefined) return Promise.resolve({ exited: true, listeners: [] });
    const id = ++this.#nextId;
    const done = new Promise<{ error?: string; exited?: true; listeners: ListenerInfo[] }>(
      (resolve) => slot.reloads.set(id, resolve),
    );
    this.#send(slot, { type: "reload", id, loaded, shared: this.#shared.init, health });
    return done;
  }

  // -------------------------------------------------------------------------------------
  // Reload

  async #reload(next: LoadedConfig | undefined): Promise<void> {
    if (this.#life.state !== "serving") {
      throw new Error(`the balancer is ${this.#life.state}, not serving`);
    }
    const loaded = next ?? await this.#load(this.#loaded.config.path);
    const previous = this.#loaded;
    await this.#apply(loaded);
    logReload(previous.config, loaded.config, previous.tls, loaded.tls);
  }

  async #apply(loaded: LoadedConfig): Promise<void> {
    const { config } = loaded;
    const previous = this.#loaded.config;
    this.#shared.assign(upstreamsOf(config), config.clients.keys());

    // Probe new upstreams and groups first; keep probing the old ones until the end.
    const health = this.#health.stage(config, previous);
    let resolved: ResolvedPorts | undefined;
    try {
      await health.ready();
      if (this.#life.state !== "serving") {
        throw new Error(`the balancer started ${this.#life.state}`);
      }
      resolved = await resolvePorts(config, this.#ports);
      const material: LoadedConfig = { config: resolved.config, tls: loaded.tls };
      const reports = health.reports();
      const live = this.#slots.filter((s) => s.state === "serving");
      const results = await Promise.all(live.map((s) => this.#reloadWorker(s, material, reports)));
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
      health.commit();
      this.#loaded = loaded;
      this.#effective = material;
      this.#ports = resolved.ports;
      const answered = results.find((r) => r.error === undefined && !r.exited);
      if (answered !== undefined) this.#listeners = answered.listeners;
    } catch (error) {
      await health.revert();
      throw error;
    } finally {
      await closePlaceholders(resolved?.placeholders ?? []);
    }
  }

  /** Puts the running configuration back in workers that took a failed reload. */
  async #rollBack(slots: Slot[]): Promise<void> {
    if (slots.length === 0 || this.#life.state !== "serving") return;
    const health = this.#health.reports();
    const results = await Promise.all(
      slots.map((slot) => this.#reloadWorker(slot, this.#effective, health)),
    );
    await Promise.all(slots.map(async (slot, i) => {
      const error = results[i]!.error;
      if (error === undefined || slot.worker === undefined) return;
      // It runs neither configuration reliably: close it and start it again.
      log.error(
        "Worker {index} cannot go back to the running configuration: {error}; restarting it",
        { index: slot.index, error },
      );
      await this.#closeWorker(slot);
      this.#retire(slot);
      if (this.#life.state === "serving") this.#scheduleRestart(slot);
    }));
  }

  // -------------------------------------------------------------------------------------
  // Drain and close

  async #drain(timeout: number): Promise<DrainResult> {
    const started = this.#clock.now();
    this.#cancelRestarts();
    await this.#settleStarts();
    const live = this.#slots.filter((s) => s.worker !== undefined && s.state === "serving");
    const stopped: Promise<void>[] = [];
    const drained = live.map((slot) => {
      slot.state = "draining";
      slot.draining = Promise.withResolvers<void>();
      slot.drained = Promise.withResolvers<DrainResult>();
      stopped.push(Promise.race([slot.draining.promise, slot.drained.promise.then(() => {})]));
      this.#send(slot, { type: "drain", timeout });
      return slot.drained.promise;
    });
    // Logged once every worker stopped accepting.
    await Promise.all(stopped);
    const open = Atomics.load(this.#openCount, 0);
    log.info(
      `Draining: stopped accepting; {open} ${plural(open, "connection")} open in {workers} ${
        plural(this.#count, "worker")
      }, waiting up to {timeout}`,
      { open, workers: this.#count, timeout: formatDuration(timeout) },
    );
    const results = await Promise.all(drained);
    await this.close();
    const forced = results.reduce((sum, r) => sum + r.forced, 0);
    const durationMs = Math.round(this.#clock.now() - started);
    log.info("Drained in {durationMs} ms", { durationMs, forced, workers: this.#count });
    return { forced, durationMs };
  }

  async #shutdown(): Promise<void> {
    this.#cancelRestarts();
    await this.#settleStarts();
    // Keep the final figures: status() still answers after close.
    this.#figures.gather(this.#slots);
    const live = this.#slots.filter((s) => s.worker !== undefined);
    await Promise.all(live.map(async (slot) => {
      await this.#closeWorker(slot);
      slot.worker?.terminate();
      slot.worker = undefined;
      slot.reply?.close();
      slot.reply = undefined;
      slot.state = "closed";
      // A terminated worker answers nothing more: a drain waiting on it ends here, its
      // connections counted as forced.
      slot.drained?.resolve({
        forced: slot.last?.status.connections.active ?? 0,
        durationMs: 0,
      });
    }));
    for (const slot of this.#slots) slot.state = "closed";
    await this.#health.close();
    this.#collect[Symbol.dispose]();
  }

  /**
   * Asks a live worker to close its balancer (its connections end, its slots are
   * released by itself) and waits for it, at most {@linkcode CLOSE_TIMEOUT} ms.
   */
  async #closeWorker(slot: Slot): Promise<void> {
    if (slot.worker === undefined) return;
    slot.closed = Promise.withResolvers<void>();
    this.#send(slot, { type: "close" });
    let timer: TimerId | undefined;
    await Promise.race([
      slot.closed.promise,
      new Promise<void>((resolve) => timer = this.#clock.setTimeout(resolve, CLOSE_TIMEOUT)),
    ]);
    this.#clock.clearTimeout(timer!);
  }

  #cancelRestarts(): void {
    for (const slot of this.#slots) {
      if (slot.restartTimer === undefined) continue;
      this.#clock.clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      slot.state = "closed";
    }
  }

  /** Waits for workers being started to serve or fail. */
  async #settleStarts(): Promise<void> {
    await Promise.allSettled(this.#slots.map((s) => s.starting?.promise));
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -------------------------------------------------------------------------------------
  // Status and metrics

  #upstreamActive(address: string): number {
    try {
      return this.#shared.upstreamCounts().get(address);
    } catch {
      return 0;
    }
  }

  #collectMetrics(): void {
    this.#figures.merge(this.#figures.gather(this.#slots).values());
    this.#health.updateMetrics(this.#loaded.config.groups.values());
  }
}

function newSlot(index: number): Slot {
  return {
    index,
    state: "starting",
    worker: undefined,
    ledger: new SharedArrayBuffer(8),
    reply: undefined,
    flag: new Int32Array(new SharedArrayBuffer(4)),
    restarts: 0,
    streak: 0,
    startedAt: undefined,
    startedWall: undefined,
    starting: undefined,
    reloads: new Map(),
    draining: undefined,
    drained: undefined,
    closed: undefined,
    restartTimer: undefined,
    last: undefined,
  };
}

function upstreamsOf(config: Config): string[] {
  return [...config.groups.values()].flatMap((g) => g.upstreams.map((u) => u.address));
}

function describeFailures(failed: { slot: Slot; error: string }[]): string {
  const reasons = new Set(failed.map((f) => f.error));
  if (reasons.size === 1) return [...reasons][0]!;
  return failed.map((f) => `worker ${f.slot.index}: ${f.error}`).join("; ");
}
