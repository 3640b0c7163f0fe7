/**
 * The handshake rate: parallel `openssl s_time -new` to a balancer's sink listener, each
 * connection a full TLS 1.3 handshake with a client certificate.
 *
 * @module
 */
import { BenchError } from "../errors.ts";
import type { Sizes } from "../options.ts";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";
import type { Target } from "../targets/target.ts";

/**
 * Full mTLS handshakes per second, summed over parallel `openssl s_time -new`.
 *
 * @param pki The PKI.
 * @param target The balancer.
 * @param sizes How long and how many clients.
 * @returns The rate, and the handshakes completed.
 * @throws {BenchError} When a client reports no count, or none completed.
 */
export async function handshakeRate(
  pki: Pki,
  target: Target,
  sizes: Sizes,
): Promise<{ perSecond: number; count: number }> {
  const cmd = [
    "openssl",
    "s_time",
    "-connect",
    `127.0.0.1:${target.sinkPort}`,
    "-new",
    "-cert",
    pki.clientCert,
    "-key",
    pki.clientKey,
    "-CAfile",
    pki.ca,
    "-time",
    String(sizes.handshakeSeconds),
  ];
  const started = performance.now();
  const outputs = await Promise.all(
    Array.from(
      { length: sizes.handshakeClients },
      () => run(cmd, sizes.handshakeSeconds * 1000 + 60_000),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  let connections = 0;
  for (const { stdout } of outputs) {
    const match = /(\d+) connections in [\d.]+s/.exec(stdout);
    if (!match) throw new BenchError(`openssl s_time reported no connections:\n${stdout}`);
    connections += Number(match[1]);
  }
  if (connections === 0) {
    throw new BenchError(`openssl s_time completed no handshake through ${target.label}`);
  }
  return { perSecond: connections / seconds, count: connections };
}
