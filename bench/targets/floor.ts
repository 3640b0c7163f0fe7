/**
 * The Deno floor as a benchmark target (`_floor.ts`): `node:tls` and `pipe()`, with none
 * of mtlb's features, for what the runtime costs by itself.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { freePort, waitForPort } from "../../testing/ports.ts";
import type { Pki } from "../pki.ts";
import { spawn } from "../processes.ts";
import type { Upstreams } from "../upstreams.ts";
import type { Target } from "./target.ts";

const FLOOR_SCRIPT = fileURLToPath(new URL("../_floor.ts", import.meta.url));

/**
 * Starts the floor with a TLS listener for the Redis servers, one for the sink and a
 * plain one for the Redis servers.
 *
 * @param pki The PKI.
 * @param upstreams The upstreams.
 * @param label Its label in the table.
 * @returns The running target.
 */
export async function startFloor(pki: Pki, upstreams: Upstreams, label: string): Promise<Target> {
  const redisPort = await freePort();
  const sinkPort = await freePort();
  const tcpPort = await freePort();
  const proc = spawn(label, [
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=127.0.0.1`,
    `--allow-read=${pki.ca},${pki.serverCert},${pki.serverKey}`,
    FLOOR_SCRIPT,
    "--ca",
    pki.ca,
    "--cert",
    pki.serverCert,
    "--key",
    pki.serverKey,
    "--route",
    `${redisPort}=${upstreams.redis[0]},${upstreams.redis[1]}`,
    "--route",
    `${sinkPort}=${upstreams.sink}`,
    "--tcp-route",
    `${tcpPort}=${upstreams.redis[0]},${upstreams.redis[1]}`,
  ]);
  await waitForPort(redisPort, { process: proc });
  await waitForPort(sinkPort, { process: proc });
  await waitForPort(tcpPort, { process: proc });
  return { label, kind: "floor", proc, redisPort, sinkPort, tcpPort, config: "" };
}
