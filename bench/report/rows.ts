/**
 * The figures of the table, in order: what each measures, its unit, which way is better
 * and the bar mtlb should reach, against the Deno floor or against HAProxy.
 *
 * @module
 */
import { REDIS_CLIENTS } from "../measure/request_rate.ts";
import type { Sizes } from "../options.ts";
import { NGINX } from "../targets/nginx.ts";
import { FLOOR } from "../targets/target.ts";
import type { Row } from "./table.ts";

/** The labels of the multi-core pair, with the workers (and threads) they run. */
export interface MultiPair {
  workers: number;
  mtlb: string;
  haproxy: string;
}

/** The labels of the baseline's targets, when `--baseline` runs another checkout. */
export interface BaselineLabels {
  /** The single-threaded one, beside "mtlb". */
  single: string;
  /** The one beside the multi-core mtlb, when that one runs. */
  multi?: string;
}

/** What the table compares besides the single-threaded targets. */
export interface FigureRowsOptions {
  /** The multi-core pair, when one ran. */
  multi?: MultiPair;
  /** The baseline's targets, when one ran. */
  baseline?: BaselineLabels;
}

/**
 * The rows of the table.
 *
 * @param sizes The sizes of the run (some labels name them).
 * @param options The multi-core pair and the baseline, when they ran.
 * @returns The rows.
 */
export function figureRows(sizes: Sizes, options: FigureRowsOptions = {}): Row[] {
  const { multi, baseline } = options;
  // The single-threaded targets every figure but the multi-core one compares.
  const SINGLE = {
    mtlb: "mtlb",
    haproxy: "HAProxy",
    floor: FLOOR,
    nginx: NGINX,
    ...(baseline === undefined ? {} : { baseline: baseline.single }),
  } as const;
  const rows: Row[] = [
    {
      metric: "set",
      label: `Request rate, SET (${REDIS_CLIENTS} connections)`,
      unit: "req/s",
      higherIsBetter: true,
      digits: 0,
      bar: { of: "floor", value: 0.97 },
      ...SINGLE,
      direct: ["set", "direct"],
    },
    {
      metric: "get",
      label: `Request rate, GET (${REDIS_CLIENTS} connections)`,
      unit: "req/s",
      higherIsBetter: true,
      digits: 0,
      bar: { of: "floor", value: 0.97 },
      ...SINGLE,
      direct: ["get", "direct"],
    },
    {
      metric: "bulk",
      label: `Bulk throughput (${sizes.bulkBytes / 1024 / 1024} MiB, one connection)`,
      unit: "MB/s",
      higherIsBetter: true,
      digits: 1,
      bar: { of: "floor", value: 0.95 },
      ...SINGLE,
    },
    {
      metric: "handshakes",
      label: `Handshake rate (${sizes.handshakeClients} clients)`,
      unit: "/s",
      higherIsBetter: true,
      digits: 0,
      bar: { of: "floor", value: 0.95 },
      ...SINGLE,
    },
    {
      metric: "resumed",
      label: `Resumed handshake rate (${sizes.handshakeClients} clients)`,
      unit: "/s",
      higherIsBetter: true,
      digits: 0,
      ...SINGLE,
    },
    {
      metric: "memory",
      label: `Memory per idle connection (${sizes.idleConnections} held)`,
      unit: "KiB",
      higherIsBetter: false,
      digits: 1,
      bar: { of: "floor", value: 1.1 },
      ...SINGLE,
    },
    ...sizes.getSizes.map((size): Row => ({
      metric: `get_ms_${size}`,
      label: `GET one at a time, ${size / 1024} KiB value`,
      unit: "ms",
      higherIsBetter: false,
      digits: 2,
      ...(size === 400 * 1024 ? { bar: { of: "haproxy", value: 2 } } : {}),
      ...SINGLE,
    })),
    ...sizes.getSizes.map((size): Row => ({
      metric: `get_rate_${size}`,
      label: `GETs/s one at a time, ${size / 1024} KiB value`,
      unit: "/s",
      higherIsBetter: true,
      digits: 0,
      ...(size === 64 * 1024 ? { bar: { of: "haproxy", value: 0.5 } } : {}),
      ...SINGLE,
    })),
    {
      metric: "cpu_requests",
      label: "CPU per 1,000 requests (SET and GET runs)",
      unit: "ms",
      higherIsBetter: false,
      digits: 1,
      ...SINGLE,
    },
    {
      metric: "cpu_requests_tcp",
      label: "CPU per 1,000 requests, plain TCP (no TLS; mtlb n/a)",
      unit: "ms",
      higherIsBetter: false,
      digits: 1,
      ...SINGLE,
    },
    {
      metric: "cpu_handshake",
      label: "CPU per handshake",
      unit: "ms",
      higherIsBetter: false,
      digits: 3,
      ...SINGLE,
    },
    {
      metric: "cpu_resumed",
      label: "CPU per resumed handshake",
      unit: "ms",
      higherIsBetter: false,
      digits: 3,
      ...SINGLE,
    },
    {
      metric: "p50",
      label: "Added latency p50 (PING round trip)",
      unit: "us",
      higherIsBetter: false,
      digits: 0,
      ...SINGLE,
      direct: ["p50", "direct"],
    },
    {
      metric: "p99",
      label: "Added latency p99 (PING round trip)",
      unit: "us",
      higherIsBetter: false,
      digits: 0,
      ...SINGLE,
      direct: ["p99", "direct"],
    },
  ];
  if (multi !== undefined) {
    for (const [metric, name] of [["set", "SET"], ["get", "GET"]] as const) {
      rows.push({
        metric,
        label: `Request rate, ${name}, ${multi.workers} workers vs nbthread ${multi.workers}`,
        unit: "req/s",
        higherIsBetter: true,
        digits: 0,
        bar: { of: "haproxy", value: 1 },
        mtlb: multi.mtlb,
        haproxy: multi.haproxy,
        ...(baseline?.multi === undefined ? {} : { baseline: baseline.multi }),
      });
    }
  }
  return rows;
}
