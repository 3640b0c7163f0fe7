/**
 * One round of the benchmark: every figure for every target, the targets taking turns
 * on each figure, the first one rotating between rounds.
 *
 * @module
 */
import { cpuDuring } from "../testing/process_sample.ts";
import { bulkThroughput } from "./measure/bulk_throughput.ts";
import { handshakeRate } from "./measure/handshake_rate.ts";
import { memoryPerConnection } from "./measure/memory_per_connection.ts";
import { pingLatency } from "./measure/ping_latency.ts";
import { requestRate } from "./measure/request_rate.ts";
import { sequentialGets } from "./measure/sequential_gets.ts";
import type { Sizes } from "./options.ts";
import type { Pki } from "./pki.ts";
import type { Samples } from "./report/samples.ts";
import { format } from "./report/table.ts";
import { startFresh } from "./targets/fresh.ts";
import type { Target } from "./targets/target.ts";
import type { Upstreams } from "./upstreams.ts";

/** What a round measures, and where its values go. */
export interface RoundContext {
  /** Where fresh targets write their configs. */
  dir: string;
  pki: Pki;
  upstreams: Upstreams;
  sizes: Sizes;
  /** mtlb, HAProxy, the floor and NGINX, single-threaded (and the baseline's mtlb, if any). */
  single: readonly Target[];
  /** The multi-core pair, and the baseline's multi-core mtlb (request rate only); may be empty. */
  multi: readonly Target[];
  samples: Samples;
  /** Where progress goes. */
  log: (message: string) => void;
}

/**
 * Measures every target twice, in `order` and then in reverse (A B C, C B A), so that
 * a machine that slows down or speeds up during the figure weighs on every target
 * alike: each target's mean sits at the same moment, the middle of the figure.
 */
async function thereAndBack<T>(
  order: readonly Target[],
  measure: (target: Target) => Promise<T>,
): Promise<Map<Target, T[]>> {
  const runs = new Map<Target, T[]>(order.map((target) => [target, []]));
  for (const target of [...order, ...order.toReversed()]) {
    runs.get(target)!.push(await measure(target));
  }
  return runs;
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** The rate of runs that each did the same work: all of it over all their time. */
function harmonicMean(rates: readonly number[]): number {
  return rates.length / rates.reduce((sum, rate) => sum + 1 / rate, 0);
}

/** `list` rotated left by `by` places (modulo its length). */
function rotate<T>(list: readonly T[], by: number): T[] {
  const k = list.length === 0 ? 0 : by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

/**
 * Measures every figure once for every target.
 *
 * @param round This round, from 0.
 * @param rounds How many rounds the run has.
 * @param context The targets, the sizes, and where the values go.
 */
export async function measureRound(
  round: number,
  rounds: number,
  context: RoundContext,
): Promise<void> {
  const { dir, pki, upstreams, sizes, single, multi, samples, log } = context;
  // Rotate which balancer goes first, so none always runs on a cooler machine.
  const order = rotate(single, round);
  const orderMulti = rotate(multi, round);
  const r = `round ${round + 1}/${rounds}`;

  const direct = await requestRate(pki, upstreams.redis[0], sizes.requests, false);
  samples.add("set", "direct", direct.set);
  samples.add("get", "direct", direct.get);
  for (
    const [target, runs] of await thereAndBack(
      [...order, ...orderMulti],
      (target) =>
        cpuDuring(target.proc.pid, () => requestRate(pki, target.redisPort, sizes.requests, true)),
    )
  ) {
    const set = harmonicMean(runs.map(([rate]) => rate.set));
    const get = harmonicMean(runs.map(([rate]) => rate.get));
    samples.add("set", target.label, set);
    samples.add("get", target.label, get);
    // redis-benchmark sends `requests` SETs, then as many GETs.
    const cpuMs = mean(runs.map(([, ms]) => ms)); // the same requests in each run
    samples.add("cpu_requests", target.label, cpuMs / (2 * sizes.requests / 1000));
    log(`${r}: ${target.label}: ${format(set, 0)} SET/s, ${format(get, 0)} GET/s`);
  }
  // The same requests in plain TCP: what the runtime costs without TLS.
  for (const target of order) {
    if (target.tcpPort === undefined) continue;
    const [, cpuMs] = await cpuDuring(
      target.proc.pid,
      () => requestRate(pki, target.tcpPort!, sizes.requests, false),
    );
    samples.add("cpu_requests_tcp", target.label, cpuMs / (2 * sizes.requests / 1000));
  }
  for (
    const [target, runs] of await thereAndBack(
      order,
      (target) => bulkThroughput(pki, target, upstreams, sizes.bulkBytes),
    )
  ) {
    const mbs = harmonicMean(runs);
    samples.add("bulk", target.label, mbs);
    log(`${r}: ${target.label}: bulk ${format(mbs, 1)} MB/s`);
  }
  for (
    const [target, runs] of await thereAndBack(
      order,
      (target) => cpuDuring(target.proc.pid, () => handshakeRate(pki, target, sizes)),
    )
  ) {
    // Each run lasts the same time: the mean rate is all handshakes over all that time.
    const perSecond = mean(runs.map(([rate]) => rate.perSecond));
    samples.add("handshakes", target.label, perSecond);
    const count = runs.reduce((sum, [rate]) => sum + rate.count, 0);
    samples.add("cpu_handshake", target.label, runs.reduce((sum, [, ms]) => sum + ms, 0) / count);
    log(`${r}: ${target.label}: ${format(perSecond, 0)} handshakes/s`);
  }
  for (const target of order) {
    const [rate, cpuMs] = await cpuDuring(
      target.proc.pid,
      () => handshakeRate(pki, target, sizes, true),
    );
    samples.add("resumed", target.label, rate.perSecond);
    samples.add("cpu_resumed", target.label, cpuMs / rate.count);
    log(
      `${r}: ${target.label}: ${format(rate.perSecond, 0)} resumed handshakes/s (${
        format(rate.resumed * 100, 0)
      }% resumed)`,
    );
  }
  // One client takes turns among the balancers, in blocks of GETs one at a time.
  const gets = await sequentialGets(
    pki,
    order.map((target) => target.redisPort),
    sizes.getSizes,
    sizes.sequentialGets,
  );
  for (const { port, size, msPerGet, perSecond } of gets) {
    const target = order.find((t) => t.redisPort === port)!;
    samples.add(`get_ms_${size}`, target.label, msPerGet);
    samples.add(`get_rate_${size}`, target.label, perSecond);
    log(
      `${r}: ${target.label}: GET ${size / 1024} KiB one at a time ${format(msPerGet, 2)} ms, ${
        format(perSecond, 0)
      }/s`,
    );
  }
  for (const target of order) {
    const fresh = await startFresh(dir, pki, upstreams, target);
    let kib: number;
    try {
      kib = await memoryPerConnection(pki, fresh, upstreams, sizes.idleConnections);
    } finally {
      await fresh.proc.stop();
    }
    samples.add("memory", target.label, kib);
    log(`${r}: ${target.label}: ${format(kib, 1)} KiB per idle connection`);
  }
  // One client takes turns among direct and every balancer, one round trip each.
  const [base, ...via] = await pingLatency(
    pki,
    upstreams.redis[0],
    order.map((target) => target.redisPort),
    sizes.roundTrips,
  );
  samples.add("p50", "direct", base!.p50);
  samples.add("p99", "direct", base!.p99);
  for (const [i, target] of order.entries()) {
    const added = { p50: via[i]!.p50 - base!.p50, p99: via[i]!.p99 - base!.p99 };
    samples.add("p50", target.label, added.p50);
    samples.add("p99", target.label, added.p99);
    log(
      `${r}: ${target.label}: added latency p50 ${format(added.p50, 0)} us, p99 ${
        format(added.p99, 0)
      } us`,
    );
  }
}
