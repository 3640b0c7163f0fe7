/**
 * Load suite: 5,000 concurrent mTLS connections held through the balancer with data
 * flowing, twice, then a burst of 1,000 simultaneous new connections. Everything on
 * 127.0.0.1; the balancer (`main.ts`), the echo upstream and four client processes
 * are separate processes, so the balancer's descriptors and memory are its own.
 *
 * Checks, each failing the run (exit 1):
 * - every echo comes back byte for byte, and no connection fails (resets included);
 * - after each round, the balancer's open and active connections and every client's
 *   limiter slots are back to 0 (admin `/status`), its open file descriptors are back
 *   to where they started, and its audit log has one record per connection;
 * - the second round runs with each client exactly at its `max_connections`: a
 *   single slot leaked by the first round would refuse a connection.
 *
 * Memory is recorded (resident and peak), not judged: V8 keeps freed heap for reuse.
 *
 * Usage: `deno task stress` (this, then `soak.ts`), or
 * `deno run --allow-net=127.0.0.1 --allow-read --allow-write --allow-run --allow-env
 * --allow-sys stress/load_5000.ts [--connections=5000] [--rounds=2] [--burst=1000] [--bytes=4096]
 * [--v8-flags=FLAGS] [--json=FILE]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { until } from "../testing/poll.ts";
import type { Subprocess } from "../testing/subprocess.ts";
import {
  BalancerProcess,
  Checks,
  type ClientReport,
  conditions,
  errorCount,
  makePki,
  type ProcSample,
  runSuite,
  startClients,
  startUpstream,
  stressConfig,
  total,
} from "./_common.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "5000" },
    burst: { type: "string", default: "1000" },
    bytes: { type: "string", default: "4096" },
    rounds: { type: "string", default: "2" },
    "v8-flags": { type: "string" },
    json: { type: "string" },
  },
});
const PROCESSES = 4;
const CONNECTIONS = Number(values.connections);
const BURST = Number(values.burst);
const BYTES = Number(values.bytes);
const ROUNDS = Math.max(2, Number(values.rounds));
const SHARE = Math.ceil(CONNECTIONS / PROCESSES);

interface Row extends ProcSample {
  label: string;
  open?: number;
  active?: number;
  limiterSlots?: number;
}

const rows: Row[] = [];
const checks = new Checks();
const { failures, check } = checks;

console.log(`mtlb load suite: ${conditions()}`);
const startedAt = new Date();
await runSuite("mtlb_stress_", checks, async (dir) => {
  const pki = await makePki(dir, PROCESSES);
  const upstream = await startUpstream();
  await using _upstream = upstream.child;
  await using lb = await BalancerProcess.start(
    dir,
    stressConfig(pki, upstream.address, { cap: SHARE }),
    values["v8-flags"] === undefined ? {} : { v8Flags: values["v8-flags"] },
  );
  console.log(`balancer pid ${lb.pid} on 127.0.0.1:${lb.port}, admin ${lb.admin ?? "none"}`);

  const record = async (label: string): Promise<Row> => {
    const status = await lb.status();
    const row: Row = { label, ...(await lb.sample()) };
    if (status !== undefined) {
      row.open = status.connections.open;
      row.active = status.connections.active;
      row.limiterSlots = status.clients.reduce((n, c) => n + c.active, 0);
    }
    rows.push(row);
    console.log(
      `  ${label}: fds ${row.fds}, rss ${row.rssMiB} MiB (peak ${row.peakRssMiB}), threads ${row.threads}, open ${row.open}, active ${row.active}, limiter slots ${row.limiterSlots}`,
    );
    return row;
  };
  /** Waits until the balancer reports nothing open (connections close asynchronously). */
  const settle = async (): Promise<void> => {
    const idle = await until(async () => {
      const s = await lb.status();
      return s === undefined ||
        (s.connections.open === 0 && s.connections.active === 0 &&
          s.clients.every((c) => c.active === 0));
    }, 30_000);
    check(idle, "open connections, active connections and limiter slots back to 0");
  };
  const baseline = await record("idle, before any client");
  let connectionsMade = 0;
  let bytesVerified = 0;

  for (let round = 1; round <= ROUNDS; round++) {
    console.log(`round ${round}: ${SHARE * PROCESSES} connections from ${PROCESSES} processes`);
    const clients: Subprocess[] = startClients(pki, lb.port, "hold", {
      count: SHARE,
      bytes: BYTES,
    });
    try {
      const held = total(await Promise.all(clients.map((c) => c.json<ClientReport>())));
      console.log(
        `  held ${held.open} in ${held.handshakes} handshakes (p50 ${held.handshakeMs.p50} ms, p99 ${held.handshakeMs.p99} ms, max ${held.handshakeMs.max} ms), errors ${
          JSON.stringify(held.errors)
        }`,
      );
      const peak = await record(`round ${round}: ${held.open} held`);
      check(held.open === SHARE * PROCESSES, `round ${round}: all ${SHARE * PROCESSES} held`);
      check(
        peak.active === undefined || peak.active === held.open,
        `round ${round}: active = held`,
      );

      for (const c of clients) await c.send("exchange");
      const exchanged = total(await Promise.all(clients.map((c) => c.json<ClientReport>())));
      await record(`round ${round}: second echo on all`);
      for (const c of clients) await c.send("close");
      const closed = total(await Promise.all(clients.map((c) => c.json<ClientReport>())));
      const expected = SHARE * PROCESSES * BYTES * 2;
      check(
        errorCount(closed.errors) === 0,
        `round ${round}: no errors ${JSON.stringify(closed.errors)}`,
      );
      check(
        exchanged.bytesVerified === expected && closed.bytesVerified === expected,
        `round ${round}: ${closed.bytesVerified} of ${expected} bytes echoed byte-exact`,
      );
      connectionsMade += closed.ok;
      bytesVerified += closed.bytesVerified;
    } finally {
      await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
    }
    await settle();
    const after = await record(`round ${round}: all closed`);
    check(after.fds === baseline.fds, `round ${round}: fds back to ${baseline.fds} (${after.fds})`);
  }

  console.log(`burst: ${BURST} simultaneous new connections from ${PROCESSES} processes`);
  const burstClients = startClients(pki, lb.port, "burst", {
    count: Math.ceil(BURST / PROCESSES),
    bytes: 1024,
  });
  let burst: ClientReport;
  try {
    await Promise.all(burstClients.map((c) => c.json<ClientReport>())); // ready
    await Promise.all(burstClients.map((c) => c.send("go")));
    burst = total(await Promise.all(burstClients.map((c) => c.json<ClientReport>())));
  } finally {
    await Promise.all(burstClients.map((c) => c[Symbol.asyncDispose]()));
  }
  const resets = Object.entries(burst.errors)
    .filter(([k]) => /reset|ECONNRESET|BrokenPipe|UnexpectedEof/i.test(k))
    .reduce((n, [, v]) => n + v, 0);
  console.log(
    `  ${burst.ok} connected and echoed in ${burst.elapsedMs} ms; handshake p50 ${burst.handshakeMs.p50} ms, p99 ${burst.handshakeMs.p99} ms, max ${burst.handshakeMs.max} ms; resets ${resets}; errors ${
      JSON.stringify(burst.errors)
    }`,
  );
  check(burst.ok === Math.ceil(BURST / PROCESSES) * PROCESSES, `burst: all ${burst.ok} succeeded`);
  check(resets === 0, `burst: ${resets} resets`);
  connectionsMade += burst.ok;
  bytesVerified += burst.bytesVerified;
  await settle();
  const final = await record("idle, after everything");
  check(final.fds === baseline.fds, `fds back to ${baseline.fds} (${final.fds})`);

  const ended = Object.values(lb.logs.ended).reduce((a, b) => a + b, 0);
  check(ended === connectionsMade, `${ended} audit records for ${connectionsMade} connections`);
  check(Object.keys(lb.logs.denied).length === 0, `no refusals ${JSON.stringify(lb.logs.denied)}`);
  check(
    Object.keys(lb.logs.handshakeFailed).length === 0,
    `no failed handshakes ${JSON.stringify(lb.logs.handshakeFailed)}`,
  );
  check(
    lb.logs.errors.length === 0,
    `no errors logged ${JSON.stringify(lb.logs.errors.slice(0, 5))}`,
  );
  const code = await lb.stop();
  check(code === 0, `balancer exited ${code} on SIGTERM`);

  const summary = {
    suite: "load_5000",
    startedAt: startedAt.toISOString(),
    conditions: conditions(),
    connectionsHeld: SHARE * PROCESSES,
    rounds: ROUNDS,
    connectionsMade,
    bytesVerified,
    burst: {
      connections: burst.ok,
      resets,
      errors: burst.errors,
      elapsedMs: burst.elapsedMs,
      handshakeMs: burst.handshakeMs,
    },
    auditRecords: lb.logs.ended,
    samples: rows,
    failures,
  };
  console.log(`\n${connectionsMade} connections, ${bytesVerified} bytes echoed byte-exact`);
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(summary, null, 2));
  }
});
