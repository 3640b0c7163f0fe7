/**
 * The handshake rate: parallel `openssl s_time` to a balancer, each connection a full
 * TLS 1.3 handshake with a client certificate (`-new`, to the sink listener), or a
 * resumed one (`-reuse`, to the Redis listener: see {@linkcode handshakeRate}).
 *
 * @module
 */
import { BenchError } from "../errors.ts";
import type { Sizes } from "../options.ts";
import type { Pki } from "../pki.ts";
import { run } from "../processes.ts";
import type { Target } from "../targets/target.ts";

/**
 * What `s_time -reuse` sends on each connection to the Redis listener: its request line
 * (which Redis refuses), then `QUIT`, so that Redis closes the connection. In TLS 1.3 the
 * session ticket comes after the handshake, and `s_time` only reads it when it reads a
 * reply to the end; a connection to the sink, which never answers, would not be resumable.
 */
const RESUME_REQUEST = "x\r\nQUIT\r\n";

/** Handshakes per second through a balancer, and how many completed. */
export interface HandshakeRate {
  perSecond: number;
  count: number;
  /** The share of the connections that resumed a session (`-reuse`; 0 with `-new`). */
  resumed: number;
}

/**
 * mTLS handshakes per second, summed over parallel `openssl s_time`.
 *
 * With `resumed`, each client runs `s_time -reuse` against the Redis listener: a full
 * handshake first, then connections that resume its session (TLS 1.3 tickets), each
 * sending one line and `QUIT` and reading to the end; `resumed` in the result says how
 * many of them did resume.
 *
 * @param pki The PKI.
 * @param target The balancer.
 * @param sizes How long and how many clients.
 * @param resumed Whether to time resumed handshakes instead of full ones.
 * @returns The rate, the handshakes completed and the share resumed.
 * @throws {BenchError} When a client reports no count, or none completed.
 */
export async function handshakeRate(
  pki: Pki,
  target: Target,
  sizes: Sizes,
  resumed = false,
): Promise<HandshakeRate> {
  const cmd = [
    "openssl",
    "s_time",
    "-connect",
    `127.0.0.1:${resumed ? target.redisPort : target.sinkPort}`,
    ...(resumed ? ["-reuse", "-www", RESUME_REQUEST] : ["-new"]),
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
  let reused = 0;
  for (const { stdout } of outputs) {
    const match = /(\d+) connections in [\d.]+s/.exec(stdout);
    if (!match) throw new BenchError(`openssl s_time reported no connections:\n${stdout}`);
    connections += Number(match[1]);
    // s_time prints "r" for each connection that resumed, "*" for a full handshake.
    if (resumed) reused += /^[r*]+$/m.exec(stdout)?.[0].replaceAll("*", "").length ?? 0;
  }
  if (connections === 0) {
    throw new BenchError(`openssl s_time completed no handshake through ${target.label}`);
  }
  return { perSecond: connections / seconds, count: connections, resumed: reused / connections };
}
