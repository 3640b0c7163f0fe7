/**
 * The workers of a `WorkerBalancer`, one slot each: a slot starts its Worker, reads
 * its messages, and when it dies gives back the connection slots it held and
 * starts it again (at once, then with a growing delay if it keeps dying soon after
 * starting); it also carries the reload, drain and close of its worker.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Clock, TimerId } from "../core/clock.ts";
import { errorMessage } from "../core/errors.ts";
import type { LoadedConfig } from "../server/lifecycle.ts";
import type { PassiveHealthRecord } from "../server/records.ts";
import type { BalancerState, DrainResult, ListenerInfo } from "../server/status.ts";
import { type ReleasedSlots, type SharedCount, WorkerLedger } from "./ledger.ts";
import type { SharedState, SharedStateOptions } from "./shared_state.ts";
import type { WorkerLogging } from "./worker_logging.ts";
import type { WorkerExitRecord, WorkerStartRecord } from "./records.ts";
import type { WorkerLifeState } from "./status.ts";
import {
  errorFrom,
  type FromWorker,
  type GroupDnsReports,
  type GroupHealthReports,
  type ToWorker,
} from "./_messages.ts";
import type { Figures } from "./_worker_figures.ts";

const log = getLogger(["mtlb", "workers"]);

/** A worker that lived this long before it died is restarted at once, ms. */
const STABLE_AFTER = 60_000;
/** The longest wait before restarting a worker that keeps dying, ms. */
const MAX_RESTART_DELAY = 30_000;
/** How long closing waits for a worker to close its sockets before terminating it, ms. */
const CLOSE_TIMEOUT = 10_000;

/** How a worker took a reload: applied, refused with an error, or gone. */
export interface WorkerReload {
  /** Why it could not apply the configuration. */
  error?: string;
  /** It died, or was not running. */
  exited?: true;
  /** The addresses it listens on. */
  listeners: ListenerInfo[];
}

/** One worker's place: its thread while it runs, and what outlives the thread. */
export interface Slot {
  /** The worker's number, from 1. */
  index: number;
  /** Its life. */
  state: WorkerLifeState;
  /** Its thread, while it runs. */
  worker: Worker | undefined;
  /** Its {@linkcode WorkerLedger} memory. */
  ledger: SharedArrayBuffer;
  /** Where it answers `collect`, read synchronously. */
  reply: MessagePort | undefined;
  /** Set to 1 (and notified) after each `collect` answer. */
  flag: Int32Array;
  /** How many times it was restarted after dying. */
  restarts: number;
  /** Deaths in a row, each soon after a start. */
  streak: number;
  /** Primary clock time it last started serving. */
  startedAt: number | undefined;
  /** Wall-clock time it last started serving, ms since the epoch. */
  startedWall: number | undefined;
  /** Settled once it serves, or failed to start. */
  starting: PromiseWithResolvers<ListenerInfo[]> | undefined;
  /** The reloads it has not answered, by id. */
  reloads: Map<number, (result: WorkerReload) => void>;
  /** Settled once the worker stopped accepting, in a drain. */
  draining: PromiseWithResolvers<void> | undefined;
  /** Settled once its drain ended. */
  drained: PromiseWithResolvers<DrainResult> | undefined;
  /** Settled once it closed its balancer. */
  closed: PromiseWithResolvers<void> | undefined;
  /** The pending restart. */
  restartTimer: TimerId | undefined;
  /** The latest figures it answered with. */
  last: Figures | undefined;
  /**
   * The latest set of upstreams it applied (the primary's epoch): it picks no
   * upstream the primary dropped before it; -1 while it starts.
   */
  applied: number;
}

/** What a reload gives a worker besides the configuration. */
export interface ReloadMaterial {
  /** The configuration (listeners on port 0 resolved) and TLS material. */
  loaded: LoadedConfig;
  /** What the probes know of that configuration's upstreams. */
  health: GroupHealthReports;
  /** The upstreams of its DNS entries. */
  dns: GroupDnsReports;
  /** The epoch of this set of upstreams. */
  epoch: number;
}

/** Options of {@linkcode WorkerSlots}. */
export interface WorkerSlotsOptions {
  /** The number of workers. */
  count: number;
  /** The module each worker runs. */
  module: URL;
  /** Time source of restart delays and close timeouts. */
  clock: Clock;
  /** Wall-clock time, ms since the epoch. */
  wall: () => number;
  /** The counts every worker shares. */
  shared: SharedState;
  /** Capacity of the shared counts, for each worker's ledger. */
  sharedOptions: SharedStateOptions;
  /** The open-files limit the default connection caps derive from. */
  fileDescriptorLimit: number | undefined;
  /** How each worker configures LogTape. */
  logging: WorkerLogging | undefined;
  /** Where `"worker_exit"`, `"worker_start"` and the workers' refusals are dispatched. */
  events: EventTarget;
  /** The configuration a worker starts on (listeners on port 0 resolved). */
  running: () => LoadedConfig;
  /** What the primary's probes know, for a worker that starts. */
  health: () => GroupHealthReports;
  /** The upstreams of the DNS entries and their epoch, for a worker that starts. */
  dns: () => { reports: GroupDnsReports; epoch: number };
  /** The balancer's life-cycle state: workers are restarted only while it serves. */
  state: () => BalancerState;
  /** A worker's passive health signal. */
  passive: (record: PassiveHealthRecord) => void;
  /** The latest figures of a worker that runs no more. */
  retired: (last: Figures) => void;
  /** Runs a restart in turn with reloads. */
  enqueue: (task: () => Promise<void>) => void;
}

/** The workers of a primary, and their lives. */
export class WorkerSlots {
  #count: number;
  #module: URL;
  #clock: Clock;
  #wall: () => number;
  #shared: SharedState;
  #sharedOptions: SharedStateOptions;
  #fileDescriptors: number | undefined;
  #logging: WorkerLogging | undefined;
  #events: EventTarget;
  #running: () => LoadedConfig;
  #health: () => GroupHealthReports;
  #dns: () => { reports: GroupDnsReports; epoch: number };
  #state: () => BalancerState;
  #passive: (record: PassiveHealthRecord) => void;
  #retired: (last: Figures) => void;
  #enqueue: (task: () => Promise<void>) => void;
  #slots: Slot[] = [];
  #listeners: ListenerInfo[] = [];
  /** Open client connections of every worker: what `max_connections` caps. */
  #openCount = new Int32Array(new SharedArrayBuffer(4));
  #connections: SharedCount = {
    add: (delta: number): number => Atomics.add(this.#openCount, 0, delta) + delta,
  };
  #nextId = 0;

  /**
   * Creates the slots; no worker runs until {@linkcode WorkerSlots.start}.
   *
   * @param options What the workers run on and whom they tell.
   */
  constructor(options: WorkerSlotsOptions) {
    this.#count = options.count;
    this.#module = options.module;
    this.#clock = options.clock;
    this.#wall = options.wall;
    this.#shared = options.shared;
    this.#sharedOptions = options.sharedOptions;
    this.#fileDescriptors = options.fileDescriptorLimit;
    this.#logging = options.logging;
    this.#events = options.events;
    this.#running = options.running;
    this.#health = options.health;
    this.#dns = options.dns;
    this.#state = options.state;
    this.#passive = options.passive;
    this.#retired = options.retired;
    this.#enqueue = options.enqueue;
  }

  /** Every slot, in order. */
  get all(): readonly Slot[] {
    return this.#slots;
  }

  /** The addresses the workers listen on, as the latest one to start or reload said. */
  get listeners(): ListenerInfo[] {
    return this.#listeners;
  }

  set listeners(listeners: ListenerInfo[]) {
    this.#listeners = listeners;
  }

  /** Open client connections over every worker. */
  get open(): number {
    return Atomics.load(this.#openCount, 0);
  }

  /**
   * Starts every worker on the running configuration.
   *
   * @returns When every worker serves.
   * @throws {Error} The first failure of a worker to start.
   */
  async start(): Promise<void> {
    for (let index = 1; index <= this.#count; index++) this.#slots.push(newSlot(index));
    const started = await Promise.allSettled(this.#slots.map((slot) => this.#spawn(slot)));
    const failure = started.find((r) => r.status === "rejected");
    if (failure !== undefined) throw failure.reason;
  }

  /**
   * Posts a message to a slot's worker, if it runs.
   *
   * @param slot The slot.
   * @param message The message.
   */
  send(slot: Slot, message: ToWorker): void {
    slot.worker?.postMessage(message);
  }

  /**
   * Posts a message to every running worker.
   *
   * @param message The message.
   */
  broadcast(message: ToWorker): void {
    for (const slot of this.#slots) this.send(slot, message);
  }

  /**
   * The lowest epoch every running worker has applied: no worker picks an upstream
   * the primary dropped before it.
   *
   * @returns The epoch; `Infinity` when no worker runs.
   */
  get applied(): number {
    return Math.min(...this.#slots.filter((s) => s.worker !== undefined).map((s) => s.applied));
  }

  /**
   * Asks a worker to apply a configuration.
   *
   * @param slot The slot.
   * @param material The configuration, health, DNS upstreams and their epoch.
   * @returns How the worker took it.
   */
  reload(slot: Slot, material: ReloadMaterial): Promise<WorkerReload> {
    if (slot.worker === undefined) return Promise.resolve({ exited: true, listeners: [] });
    const id = ++this.#nextId;
    const done = new Promise<WorkerReload>((resolve) => slot.reloads.set(id, resolve));
    this.send(slot, { type: "reload", id, shared: this.#shared.init, ...material });
    return done;
  }

  /**
   * Terminates the slot's worker, gives back the connection slots its ledger holds,
   * and keeps its counters in the retired sums. Only for a worker that runs no more
   * code on its own: one that died, failed to start, or closed its balancer.
   *
   * @param slot The slot.
   * @returns What was given back.
   */
  retire(slot: Slot): ReleasedSlots {
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
    if (slot.last !== undefined) this.#retired(slot.last);
    slot.last = undefined;
    slot.state = "restarting";
    slot.startedWall = undefined;
    return released;
  }

  /**
   * Schedules a restart: at once after a long life, then 1 s, 2 s, ... up to 30 s.
   *
   * @param slot The slot.
   * @returns The delay, ms.
   */
  scheduleRestart(slot: Slot): number {
    const now = this.#clock.now();
    if (slot.startedAt !== undefined && now - slot.startedAt >= STABLE_AFTER) slot.streak = 0;
    slot.streak++;
    const delay = slot.streak === 1
      ? 0
      : Math.min(MAX_RESTART_DELAY, 1000 * 2 ** (slot.streak - 2));
    slot.state = "restarting";
    slot.restartTimer = this.#clock.setTimeout(() => {
      slot.restartTimer = undefined;
      this.#enqueue(() => this.#restart(slot));
    }, delay);
    return delay;
  }

  /**
   * Asks a live worker to close its balancer (its connections end, its slots are
   * released by itself) and waits for it, at most {@linkcode CLOSE_TIMEOUT} ms.
   *
   * @param slot The slot.
   * @returns When it closed, or the wait ended.
   */
  async close(slot: Slot): Promise<void> {
    if (slot.worker === undefined) return;
    slot.closed = Promise.withResolvers<void>();
    this.send(slot, { type: "close" });
    let timer: TimerId | undefined;
    await Promise.race([
      slot.closed.promise,
      new Promise<void>((resolve) => timer = this.#clock.setTimeout(resolve, CLOSE_TIMEOUT)),
    ]);
    this.#clock.clearTimeout(timer!);
  }

  /** Cancels the pending restarts; their slots are closed. */
  cancelRestarts(): void {
    for (const slot of this.#slots) {
      if (slot.restartTimer === undefined) continue;
      this.#clock.clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      slot.state = "closed";
    }
  }

  /**
   * Waits for workers being started to serve or fail.
   *
   * @returns When none is starting.
   */
  async settleStarts(): Promise<void> {
    await Promise.allSettled(this.#slots.map((s) => s.starting?.promise));
  }

  /**
   * Drains every serving worker.
   *
   * @param timeout How long their live connections get, ms.
   * @returns `stopped`, settled once every one stopped accepting, and `drained`,
   *   each one's result once its drain ended.
   */
  drain(timeout: number): { stopped: Promise<void>; drained: Promise<DrainResult[]> } {
    const live = this.#slots.filter((s) => s.worker !== undefined && s.state === "serving");
    const stopped: Promise<void>[] = [];
    const drained = live.map((slot) => {
      slot.state = "draining";
      slot.draining = Promise.withResolvers<void>();
      slot.drained = Promise.withResolvers<DrainResult>();
      stopped.push(Promise.race([slot.draining.promise, slot.drained.promise.then(() => {})]));
      this.send(slot, { type: "drain", timeout });
      return slot.drained.promise;
    });
    return { stopped: Promise.all(stopped).then(() => {}), drained: Promise.all(drained) };
  }

  /**
   * Closes every worker (see {@linkcode WorkerSlots.close}), then terminates it.
   *
   * @returns When every worker thread is gone.
   */
  async closeAll(): Promise<void> {
    const live = this.#slots.filter((s) => s.worker !== undefined);
    await Promise.all(live.map(async (slot) => {
      await this.close(slot);
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
  }

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
    slot.applied = -1;
    const dns = this.#dns();
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
      loaded: this.#running(),
      shared: this.#shared.init,
      ledger: slot.ledger,
      connections: this.#openCount.buffer as SharedArrayBuffer,
      fileDescriptorLimit: this.#fileDescriptors,
      workers: this.#count,
      health: this.#health(),
      dns: dns.reports,
      epoch: dns.epoch,
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
        slot.applied = message.epoch;
        this.#listeners = message.listeners;
        slot.starting?.resolve(message.listeners);
        slot.starting = undefined;
        return;
      case "failed":
        slot.starting?.reject(errorFrom(message.error));
        slot.starting = undefined;
        return;
      case "dns_applied":
        slot.applied = Math.max(slot.applied, message.epoch);
        return;
      case "reloaded": {
        // Failed or not, it runs a set of upstreams no older than this one.
        slot.applied = Math.max(slot.applied, message.epoch);
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
        this.#passive(message.record);
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
    const released = this.retire(slot);
    const failure = new Error(`Worker ${slot.index} died: ${error}`);
    slot.starting?.reject(failure);
    slot.starting = undefined;
    for (const settle of slot.reloads.values()) settle({ exited: true, listeners: [] });
    slot.reloads.clear();
    slot.drained?.resolve({ forced: 0, durationMs: 0 });
    slot.closed?.resolve();
    const record: WorkerExitRecord = { index: slot.index, error, released };
    if (wasServing && this.#state() === "serving") {
      record.restartInMs = this.scheduleRestart(slot);
      log.error(
        "Worker {index} died: {error}; its {connections} connections are lost, their {upstreams} upstream and {clients} client slots given back; restarting it in {delay} ms",
        { index: slot.index, error, ...released, delay: record.restartInMs },
      );
    } else {
      slot.state = this.#state() === "serving" ? slot.state : "closed";
      log.error("Worker {index} died: {error}", { index: slot.index, error, ...released });
    }
    this.#emit("worker_exit", record);
  }

  async #restart(slot: Slot): Promise<void> {
    if (this.#state() !== "serving" || slot.state !== "restarting") return;
    try {
      await this.#spawn(slot);
    } catch (error) {
      if (slot.worker !== undefined) this.retire(slot);
      if (this.#state() !== "serving") {
        slot.state = "closed";
        return;
      }
      const delay = this.scheduleRestart(slot);
      log.error("Worker {index} could not restart: {error}; trying again in {delay} ms", {
        index: slot.index,
        error: errorMessage(error),
        delay,
      });
      return;
    }
    slot.restarts++;
    log.info("Worker {index} restarted", { index: slot.index, restarts: slot.restarts });
    const record: WorkerStartRecord = { index: slot.index, restarts: slot.restarts };
    this.#emit("worker_start", record);
  }

  #emit(type: string, detail: unknown): void {
    this.#events.dispatchEvent(new CustomEvent(type, { detail }));
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
    applied: -1,
  };
}
