/**
 * The upstreams every balancer forwards to: two `redis-server`s (no persistence) and the
 * byte sink (`_sink.ts`), which reports each transfer and how many connections it holds.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { until } from "../testing/poll.ts";
import { freePort, waitForPort } from "../testing/ports.ts";
import type { Subprocess } from "../testing/subprocess.ts";
import { BenchError } from "./errors.ts";
import { spawn } from "./processes.ts";

const SINK = fileURLToPath(new URL("_sink.ts", import.meta.url));

/** Upstreams shared by every balancer. */
export interface Upstreams {
  redis: [number, number];
  sink: number;
  /** The sink's control port: a connection reads how many connections the sink holds. */
  sinkControl: number;
  /** The sink: one line per transfer that carried bytes, on standard output. */
  sinkProc: Subprocess;
}

/**
 * Starts both Redis servers and the sink, and waits until they listen.
 *
 * @returns Their ports, and the sink.
 */
export async function startUpstreams(): Promise<Upstreams> {
  const redis: [number, number] = [await freePort(), await freePort()];
  for (const [i, port] of redis.entries()) {
    const proc = spawn(`redis-server #${i + 1}`, [
      "redis-server",
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      "--maxclients",
      "10000",
      "--daemonize",
      "no",
      "--logfile",
      "",
    ]);
    await waitForPort(port, { process: proc });
  }
  const sink = spawn("sink", [
    Deno.execPath(),
    "run",
    "--quiet",
    "--allow-net=127.0.0.1",
    SINK,
  ], { stdout: true });
  const first = await sink.stdout.read(30_000, "the sink to listen");
  if (first === undefined) throw new BenchError(sink.describeExit(await sink.status));
  const { port, control } = JSON.parse(first) as { port: number; control: number };
  return { redis, sink: port, sinkControl: control, sinkProc: sink };
}

/**
 * How many connections the sink holds now.
 *
 * @param upstreams The upstreams.
 * @returns The count.
 * @throws {BenchError} When the sink has exited or does not answer.
 */
export async function sinkOpen(upstreams: Upstreams): Promise<number> {
  if (upstreams.sinkProc.exited) {
    throw new BenchError(upstreams.sinkProc.describeExit(await upstreams.sinkProc.status));
  }
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: upstreams.sinkControl });
    let text = "";
    for await (const chunk of conn.readable) text += new TextDecoder().decode(chunk);
    return (JSON.parse(text) as { open: number }).open;
  } catch (error) {
    throw new BenchError("Cannot read the sink's connection count", { cause: error });
  }
}

/**
 * Waits until the sink holds no connection: those of the previous test are closed.
 *
 * @param upstreams The upstreams.
 * @throws {BenchError} When connections remain after 30 s.
 */
export async function sinkQuiet(upstreams: Upstreams): Promise<void> {
  if (!await until(async () => await sinkOpen(upstreams) === 0, 30_000)) {
    throw new BenchError("The sink still holds connections after 30 s");
  }
}
