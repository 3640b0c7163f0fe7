/**
 * Bulk throughput: `socat` pushes bytes over one mTLS connection through a balancer to
 * the sink, timed until the sink has seen the end of the stream.
 *
 * @module
 */
import { BenchError } from "../errors.ts";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";
import type { Target } from "../targets/target.ts";
import type { Upstreams } from "../upstreams.ts";

/**
 * MB/s (10^6 bytes) of one bulk transfer through `target` to the sink, timed at the sink.
 *
 * @param pki The PKI.
 * @param target The balancer.
 * @param upstreams The upstreams (the sink reports the transfer).
 * @param bytes How many bytes.
 * @returns The throughput.
 * @throws {BenchError} When the sink exits or receives another count of bytes.
 */
export async function bulkThroughput(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  bytes: number,
): Promise<number> {
  const sinkLines = upstreams.sinkProc.stdout;
  sinkLines.clear();
  const started = performance.now();
  const sender = run([
    "socat",
    "-u",
    "-b",
    "131072",
    `OPEN:/dev/zero,readbytes=${bytes}`,
    `OPENSSL:127.0.0.1:${target.sinkPort},cert=${pki.clientCert},key=${pki.clientKey},cafile=${pki.ca},verify=1`,
  ], 60_000 + bytes / 10_000);
  const timeoutMs = 60_000 + bytes / 10_000;
  const arrival = (async () => {
    const line = await sinkLines.read(timeoutMs, "the bulk transfer to reach the sink");
    if (line === undefined) throw new BenchError("The sink exited during a bulk transfer");
    return {
      received: JSON.parse(line) as { bytes: number; ms: number },
      ended: performance.now(),
    };
  })();
  const [, { received, ended }] = await Promise.all([sender, arrival]);
  if (received.bytes !== bytes) {
    throw new BenchError(
      `The sink received ${received.bytes} bytes through ${target.label}, expected ${bytes}`,
    );
  }
  return bytes / 1e6 / ((ended - started) / 1000);
}
