/**
 * Added latency: sequential `PING` round trips (`_ping_latency.ts`) on a plaintext
 * connection straight to Redis and on an mTLS connection through each balancer, taking
 * turns.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";

const PINGER = fileURLToPath(new URL("../_ping_latency.ts", import.meta.url));

/**
 * p50 and p99 of sequential PING round trips, in microseconds, per port.
 *
 * @param pki The PKI.
 * @param plainPort Redis, for the plaintext round trip.
 * @param tlsPorts The balancers' Redis listeners.
 * @param roundTrips Round trips per connection.
 * @returns The percentiles of the plaintext connection, then of each TLS port in order.
 */
export async function pingLatency(
  pki: Pki,
  plainPort: number,
  tlsPorts: readonly number[],
  roundTrips: number,
): Promise<{ p50: number; p99: number }[]> {
  const { stdout } = await run([
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=${[plainPort, ...tlsPorts].map((port) => `127.0.0.1:${port}`).join(",")}`,
    `--allow-read=${pki.ca},${pki.clientCert},${pki.clientKey}`,
    PINGER,
    "--count",
    String(roundTrips),
    "--plain",
    String(plainPort),
    ...tlsPorts.flatMap((port) => ["--tls", String(port)]),
    "--ca",
    pki.ca,
    "--cert",
    pki.clientCert,
    "--key",
    pki.clientKey,
  ], 60_000 + roundTrips * (tlsPorts.length + 1) * 10);
  const { results } = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
    results: { p50_us: number; p99_us: number }[];
  };
  return results.map((result) => ({ p50: result.p50_us, p99: result.p99_us }));
}
