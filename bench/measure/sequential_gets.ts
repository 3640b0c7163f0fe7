/**
 * Large replies one at a time: Redis `GET`s of a 16 KiB, 64 KiB and 400 KiB value, one
 * at a time over one mTLS connection per balancer (`_sequential_gets.ts`), the balancers
 * taking turns in blocks. A balancer that holds a reply's tail back for the client's
 * delayed ACK (Nagle's algorithm) takes about 40 ms per reply here.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { BenchError } from "../errors.ts";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";

const CLIENT = fileURLToPath(new URL("../_sequential_gets.ts", import.meta.url));

/** One balancer's figures for one value size. */
export interface SequentialGets {
  /** The balancer's Redis listener. */
  port: number;
  /** The value's size, bytes. */
  size: number;
  /** Mean milliseconds from sending a GET to reading the last byte of its reply. */
  msPerGet: number;
  /** GETs per second over the connection, one at a time (1000 / `msPerGet`). */
  perSecond: number;
}

/**
 * Times GETs of each size, one at a time, through every port.
 *
 * @param pki The PKI.
 * @param ports The balancers' Redis listeners.
 * @param sizes The value sizes, bytes.
 * @param count GETs per size and port.
 * @returns The figures of every port and size.
 * @throws {BenchError} When the client reports nothing for a port.
 */
export async function sequentialGets(
  pki: Pki,
  ports: readonly number[],
  sizes: readonly number[],
  count: number,
): Promise<SequentialGets[]> {
  const { stdout } = await run([
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=${ports.map((port) => `127.0.0.1:${port}`).join(",")}`,
    `--allow-read=${pki.ca},${pki.clientCert},${pki.clientKey}`,
    CLIENT,
    "--count",
    String(count),
    "--sizes",
    sizes.join(","),
    ...ports.flatMap((port) => ["--tls", String(port)]),
    "--ca",
    pki.ca,
    "--cert",
    pki.clientCert,
    "--key",
    pki.clientKey,
  ], 120_000 + count * sizes.length * ports.length * 100);
  const { results } = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
    results: { port: number; size: number; ms_per_get: number; gets_per_s: number }[];
  };
  for (const port of ports) {
    if (!results.some((result) => result.port === port)) {
      throw new BenchError(`The sequential GET client reported nothing for port ${port}`);
    }
  }
  return results.map((result) => ({
    port: result.port,
    size: result.size,
    msPerGet: result.ms_per_get,
    perSecond: result.gets_per_s,
  }));
}
