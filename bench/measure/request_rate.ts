/**
 * The request rate: `redis-benchmark` SET and GET through a balancer (or straight to
 * Redis), 50 connections, one request at a time each.
 *
 * @module
 */
import { BenchError } from "../errors.ts";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";

/** Connections `redis-benchmark` opens. */
export const REDIS_CLIENTS = 50;

/**
 * Requests per second for SET and GET, from `redis-benchmark --csv`.
 *
 * @param pki The PKI (for the client certificate).
 * @param port Where to send the requests.
 * @param requests Requests per test.
 * @param tls Whether to speak mutual TLS.
 * @returns The two rates.
 * @throws {BenchError} When `redis-benchmark` reports no rate.
 */
export async function requestRate(
  pki: Pki,
  port: number,
  requests: number,
  tls: boolean,
): Promise<{ set: number; get: number }> {
  const cmd = [
    "redis-benchmark",
    ...(tls ? ["--tls", "--cert", pki.clientCert, "--key", pki.clientKey, "--cacert", pki.ca] : []),
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-c",
    String(REDIS_CLIENTS),
    "-n",
    String(requests),
    "-t",
    "set,get",
    "--csv",
  ];
  const { stdout } = await run(cmd, 60_000 + requests);
  const rps = (test: string): number => {
    const match = new RegExp(`^"${test}","([\\d.]+)"`, "m").exec(stdout);
    if (!match) throw new BenchError(`redis-benchmark reported no ${test} rate:\n${stdout}`);
    return Number(match[1]);
  };
  return { set: rps("SET"), get: rps("GET") };
}
