/**
 * Memory per idle connection: the RSS growth of a freshly started balancer holding idle
 * mTLS connections (`_hold_connections.ts`), each open end to end.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { delay, until } from "../../testing/poll.ts";
import { sampleProcess } from "../../testing/process_sample.ts";
import { BenchError } from "../errors.ts";
import type { Pki } from "../pki.ts";
import { spawn } from "../processes.ts";
import type { Target } from "../targets/target.ts";
import { sinkOpen, sinkQuiet, type Upstreams } from "../upstreams.ts";

const HOLDER = fileURLToPath(new URL("../_hold_connections.ts", import.meta.url));

/** Connections opened and closed on a fresh balancer before its memory baseline. */
const MEMORY_WARMUP = 100;

/**
 * Resident memory of a process and its descendants, KiB.
 *
 * @throws {BenchError} When it cannot be read (the process is gone).
 */
async function treeRssKib(pid: number): Promise<number> {
  const { treeRssKib } = await sampleProcess(pid);
  if (treeRssKib === 0) throw new BenchError(`Cannot read the memory of process ${pid}`);
  return treeRssKib;
}

/** RSS once it has settled: two samples 250 ms apart within 0.5 %, at most 5 s. */
async function settledRssKib(pid: number): Promise<number> {
  let last = await treeRssKib(pid);
  for (let i = 0; i < 20; i++) {
    await delay(250);
    const now = await treeRssKib(pid);
    if (Math.abs(now - last) <= last * 0.005) return now;
    last = now;
  }
  return last;
}

/**
 * Opens `count` mTLS connections through `target` and returns once all of them reach
 * the sink, so the balancer holds each one end to end. Closing the returned handle
 * closes them.
 */
async function holdConnections(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  count: number,
): Promise<AsyncDisposable> {
  const holder = spawn(`idle connections to ${target.label}`, [
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=127.0.0.1:${target.sinkPort}`,
    `--allow-read=${pki.ca},${pki.clientCert},${pki.clientKey}`,
    HOLDER,
    "--port",
    String(target.sinkPort),
    "--count",
    String(count),
    "--ca",
    pki.ca,
    "--cert",
    pki.clientCert,
    "--key",
    pki.clientKey,
  ], { stdin: true, stdout: true });
  // It closes its connections and exits when its standard input closes.
  const release = async (): Promise<void> => {
    await holder.stop({ signal: null, graceMs: 10_000 });
  };
  try {
    const line = await holder.stdout.read(120_000, `${count} connections to ${target.label}`);
    if (line === undefined) throw new BenchError(holder.describeExit(await holder.status));
    let reached = 0;
    const all = await until(async () => (reached = await sinkOpen(upstreams)) >= count, 60_000);
    if (!all) {
      throw new BenchError(
        `Only ${reached} of ${count} connections held through ${target.label} reached the sink within 60 s`,
      );
    }
  } catch (error) {
    await release();
    throw error;
  }
  return { [Symbol.asyncDispose]: release };
}

/**
 * KiB of RSS growth per idle mTLS connection of a freshly started balancer, over
 * `count` held connections. A fresh process has no free heap left over from earlier
 * tests for the connections to reuse; a first batch of connections, opened and closed
 * before the baseline, takes one-time costs (code paths compiled, pools and caches
 * created) out of the figure.
 *
 * @param pki The PKI.
 * @param target A freshly started balancer.
 * @param upstreams The upstreams (the sink counts the connections).
 * @param count How many connections to hold.
 * @returns KiB per connection.
 * @throws {BenchError} When the connections do not all reach the sink.
 */
export async function memoryPerConnection(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  count: number,
): Promise<number> {
  const pid = target.proc.pid;
  await sinkQuiet(upstreams);
  {
    await using _warmup = await holdConnections(pki, target, upstreams, MEMORY_WARMUP);
  }
  await sinkQuiet(upstreams);
  const before = await settledRssKib(pid);
  await using _held = await holdConnections(pki, target, upstreams, count);
  const after = await settledRssKib(pid);
  return (after - before) / count;
}
