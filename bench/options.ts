/**
 * The benchmark's command line: its options, and the sizes of a full and of a quick run.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

/** The text of `--help`, and of a usage error. */
export const USAGE = `Usage: deno task bench [options]

  --rounds N         measurement rounds, targets interleaved (default 3; 1 with --quick)
  --quick            a smoke run: small sizes, one round, about a minute; writes no file
                     unless --out is given
  --mtlb-workers N   also compare mtlb with [server] workers = N against HAProxy
                     nbthread N on the request rate (default 2; 1 skips it)
  --baseline DIR     also run the mtlb checkout in DIR (a worktree or a git archive
                     extract) as "mtlb (baseline)", interleaved with the others, and
                     add its figures and the ratios mtlb/baseline to the table
  --out FILE         where to write the results (default bench/RESULTS.md)
  --install          install missing tools with apt-get (as root)
  --help             show this text

Needs redis-server, redis-benchmark, haproxy, nginx (with its stream module), socat and
openssl on PATH.`;

/** Sizes of one run. */
export interface Sizes {
  /** Requests per redis-benchmark test (SET, then GET). */
  requests: number;
  /** Bytes pushed per bulk transfer. */
  bulkBytes: number;
  /** Seconds each `openssl s_time` runs. */
  handshakeSeconds: number;
  /** Parallel `openssl s_time` processes. */
  handshakeClients: number;
  /** Idle connections held for the memory figure. */
  idleConnections: number;
  /** Sequential PING round trips for the latency figure. */
  roundTrips: number;
  /** Requests per target before the first round, to warm up JIT and caches. */
  warmupRequests: number;
  /** Sizes of the values fetched one GET at a time, bytes. */
  getSizes: readonly number[];
  /** GETs one at a time per value size and target. */
  sequentialGets: number;
}

const FULL: Sizes = {
  requests: 100_000,
  bulkBytes: 512 * 1024 * 1024,
  handshakeSeconds: 5,
  handshakeClients: 4,
  idleConnections: 1_000,
  roundTrips: 2_000,
  warmupRequests: 20_000,
  getSizes: [16 * 1024, 64 * 1024, 400 * 1024],
  sequentialGets: 1_000,
};

const QUICK: Sizes = {
  requests: 20_000,
  bulkBytes: 128 * 1024 * 1024,
  handshakeSeconds: 2,
  handshakeClients: 4,
  idleConnections: 500,
  roundTrips: 1_000,
  warmupRequests: 5_000,
  getSizes: [16 * 1024, 64 * 1024, 400 * 1024],
  sequentialGets: 40,
};

/** What the command line asks for. */
export interface BenchOptions {
  /** `--help`: print the usage and stop. */
  help: boolean;
  /** `--quick`: a smoke run. */
  quick: boolean;
  /** `--install`: install missing tools. */
  install: boolean;
  /** The sizes of the run. */
  sizes: Sizes;
  /** Measurement rounds. */
  rounds: number;
  /** mtlb workers (and HAProxy threads) of the multi-core pair; 1: none. */
  workers: number;
  /** Where to write the results; none for a quick run without `--out`. */
  out: string | undefined;
  /** Another mtlb checkout to run beside this one (an absolute path), if any. */
  baseline: string | undefined;
}

/**
 * Reads the command line.
 *
 * @param args The arguments.
 * @param defaultOut Where the results go unless `--out` says otherwise.
 * @returns The options.
 * @throws {UsageError} On an unknown option or a bad value.
 */
export function parseOptions(args: string[], defaultOut: string): BenchOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        rounds: { type: "string" },
        quick: { type: "boolean", default: false },
        "mtlb-workers": { type: "string", default: "2" },
        out: { type: "string" },
        baseline: { type: "string" },
        install: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, { cause: error });
  }
  const { values } = parsed;
  const rounds = Number(values.rounds ?? (values.quick ? 1 : 3));
  const workers = Number(values["mtlb-workers"]);
  if (!values.help && (!Number.isInteger(rounds) || rounds < 1)) {
    throw new UsageError(`--rounds must be a positive integer, received ${values.rounds}`);
  }
  if (!values.help && (!Number.isInteger(workers) || workers < 1 || workers > 1024)) {
    throw new UsageError(
      `--mtlb-workers must be an integer from 1 to 1024, received ${values["mtlb-workers"]}`,
    );
  }
  if (!values.help && values.baseline === "") {
    throw new UsageError("--baseline needs the folder of another mtlb checkout");
  }
  return {
    help: values.help,
    quick: values.quick,
    install: values.install,
    sizes: values.quick ? QUICK : FULL,
    rounds,
    workers,
    out: values.out ?? (values.quick ? undefined : defaultOut),
    baseline: values.baseline === undefined ? undefined : resolve(values.baseline),
  };
}
