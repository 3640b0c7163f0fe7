/**
 * The figures of a `WorkerBalancer`'s workers: each worker's status and metrics,
 * asked for when `/status` or `/metrics` is read, the counters of workers that died
 * (so sums never go backwards), and the `/metrics` families rebuilt from them.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CounterSeries, GaugeSeries, MetricsRegistry } from "../metrics/registry.ts";
import { parseSamples, type Sample } from "../metrics/prometheus_text.ts";
import type { BalancerStatus } from "../server/status.ts";
import { awaitAnswer } from "./_blocking_reply.ts";
import type { ToWorker } from "./_messages.ts";
import type { WorkerLifeState } from "./status.ts";

const log = getLogger(["mtlb", "workers"]);

/** Metric families summed over workers (their counters and additive gauges). */
const SUMMED = [
  "mtlb_connections_accepted_total",
  "mtlb_connections_denied_total",
  "mtlb_connections_open",
  "mtlb_bytes_total",
  "mtlb_handshake_failures_total",
  "mtlb_limiter_refusals_total",
  "mtlb_limiter_queued",
  "mtlb_limiter_queue_timeouts_total",
  "mtlb_client_connections_active",
  "mtlb_connect_retries_total",
  "mtlb_connections_closed_total",
  "mtlb_handshakes_in_flight",
] as const;
/**
 * Metric families every worker reports alike: active connections per upstream
 * (read from the shared counts), the connection cap and certificate expiry.
 */
const SHARED = [
  "mtlb_connections_active",
  "mtlb_connections_max",
  "mtlb_handshakes_max",
  "mtlb_certificate_expiry_timestamp_seconds",
  "mtlb_upstream_certificate_expiry_timestamp_seconds",
] as const;

/** A worker's metric samples by family name. */
export type Samples = Map<string, Sample[]>;

/** What one worker answered: its balancer's status and metrics. */
export interface Figures {
  /** Its status. */
  status: BalancerStatus;
  /** Its metrics, read back from their text. */
  samples: Samples;
}

/** Counters of workers that died, so sums never go backwards. */
export interface Retired {
  /** Samples of the counter families in {@linkcode SUMMED}, by family then labels. */
  samples: Map<string, Map<string, Sample>>;
  /** Connections accepted. */
  accepted: number;
  /** Connections refused, by reason. */
  denied: Map<string, number>;
  /** Failed handshakes, by reason. */
  handshakeFailures: Map<string, number>;
  /** Connections and bytes, by group. */
  groups: Map<string, { accepted: number; bytesFromClient: number; bytesFromUpstream: number }>;
}

/** What {@linkcode WorkerFigures.gather} needs of a worker. */
export interface FigureSource {
  /** The worker's number, from 1. */
  readonly index: number;
  /** Its life; only serving and draining workers are asked. */
  readonly state: WorkerLifeState;
  /** Its thread, while it runs. */
  readonly worker: Worker | undefined;
  /** Where it answers, read synchronously. */
  readonly reply: MessagePort | undefined;
  /** Set to 1 (and notified) after each answer. */
  readonly flag: Int32Array;
  /** The latest figures it answered with. */
  last: Figures | undefined;
}

/** Asks workers for their figures and merges them into the primary's registry. */
export class WorkerFigures {
  #registry: MetricsRegistry;
  #timeout: number;
  #nextId = 0;
  #retired: Retired = {
    samples: new Map(),
    accepted: 0,
    denied: new Map(),
    handshakeFailures: new Map(),
    groups: new Map(),
  };

  /**
   * Creates the figures of a primary.
   *
   * @param registry The primary's registry, with the families of a balancer.
   * @param timeout How long {@linkcode WorkerFigures.gather} waits for the answers, ms.
   */
  constructor(registry: MetricsRegistry, timeout: number) {
    this.#registry = registry;
    this.#timeout = timeout;
  }

  /** The counters of the workers that died. */
  get retired(): Readonly<Retired> {
    return this.#retired;
  }

  /**
   * Asks every serving worker for its status and metrics and waits for the answers
   * (blocking this thread: the admin endpoint's answers are synchronous). A worker
   * that does not answer within the timeout counts with its previous figures.
   *
   * @param slots Every worker.
   * @returns The latest figures of each worker that ever answered.
   */
  gather<S extends FigureSource>(slots: readonly S[]): Map<S, Figures> {
    const id = ++this.#nextId;
    const asked = slots.filter((s) =>
      s.worker !== undefined && s.reply !== undefined &&
      (s.state === "serving" || s.state === "draining")
    );
    const collect: ToWorker = { type: "collect", id };
    for (const slot of asked) {
      Atomics.store(slot.flag, 0, 0);
      slot.worker?.postMessage(collect);
    }
    const deadline = performance.now() + this.#timeout;
    for (const slot of asked) {
      const answer = awaitAnswer(slot.reply!, slot.flag, id, deadline);
      if (answer?.status !== undefined && answer.metrics !== undefined) {
        slot.last = { status: answer.status, samples: parseSamples(answer.metrics) };
      } else {
        log.warn("Worker {index} did not answer within {timeout} ms; using its previous figures", {
          index: slot.index,
          timeout: this.#timeout,
        });
      }
    }
    const figures = new Map<S, Figures>();
    for (const slot of slots) if (slot.last !== undefined) figures.set(slot, slot.last);
    return figures;
  }

  /**
   * Keeps the counters of a worker that died in the sums.
   *
   * @param last Its latest figures.
   */
  keep(last: Figures): void {
    const retired = this.#retired;
    for (const name of SUMMED) {
      if (this.#registry.family(name)?.type !== "counter") continue;
      let kept = retired.samples.get(name);
      if (kept === undefined) retired.samples.set(name, kept = new Map());
      for (const sample of last.samples.get(name) ?? []) {
        const key = sample.labels.join("\u0000");
        const have = kept.get(key);
        if (have === undefined) kept.set(key, { labels: sample.labels, value: sample.value });
        else have.value += sample.value;
      }
    }
    const { connections, groups } = last.status;
    retired.accepted += connections.accepted;
    addAll(retired.denied, connections.denied);
    addAll(retired.handshakeFailures, connections.handshakeFailures);
    for (const group of groups) {
      const have = retired.groups.get(group.name) ??
        { accepted: 0, bytesFromClient: 0, bytesFromUpstream: 0 };
      have.accepted += group.accepted;
      have.bytesFromClient += group.bytesFromClient;
      have.bytesFromUpstream += group.bytesFromUpstream;
      retired.groups.set(group.name, have);
    }
  }

  /**
   * Rebuilds the workers' families of the registry: counters and additive gauges
   * summed over the workers (and the retired ones), the others from the first
   * worker that has them.
   *
   * @param figures The workers' latest figures.
   */
  merge(figures: Iterable<Figures>): void {
    const all = [...figures];
    for (const name of SUMMED) this.#merge(name, all, true);
    for (const name of SHARED) this.#merge(name, all, false);
  }

  /** Rebuilds a family from the workers' series: summed, or the first worker's value. */
  #merge(name: string, figures: Figures[], sum: boolean): void {
    const family = this.#registry.family(name)!;
    const merged = new Map<string, Sample>();
    const add = (samples: Iterable<Sample>): void => {
      for (const sample of samples) {
        const key = sample.labels.join("\u0000");
        const have = merged.get(key);
        if (have === undefined) merged.set(key, { labels: sample.labels, value: sample.value });
        else if (sum) have.value += sample.value;
      }
    };
    for (const f of figures) add(f.samples.get(name) ?? []);
    if (sum) add(this.#retired.samples.get(name)?.values() ?? []);
    family.clear();
    for (const { labels, value } of merged.values()) {
      const series = family.labels(...labels);
      if (family.type === "counter") (series as CounterSeries).inc(value);
      else (series as GaugeSeries).set(value);
    }
  }
}

/**
 * Adds counts by key into a map.
 *
 * @param into The sums.
 * @param from The counts to add.
 */
export function addAll(into: Map<string, number>, from: Record<string, number>): void {
  for (const [key, value] of Object.entries(from)) into.set(key, (into.get(key) ?? 0) + value);
}
