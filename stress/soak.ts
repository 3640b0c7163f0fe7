/**
 * Soak suite: a bounded run (60 s by default) of connect / echo / close churn from
 * four client processes through the balancer (`main.ts` as a process), sampling its
 * file descriptors and memory at the start, the middle and the end.
 *
 * Checks, each failing the run (exit 1):
 * - no connection fails and every echo comes back byte for byte;
 * - one audit record per connection, no refusal, no failed handshake, no error logged;
 * - once the clients stop, open and active connections and limiter slots are 0 and the
 *   open file descriptors are back to where they started;
 * - no growth: resident memory at the end is within `--rss-slack` (default 10%) of
 *   the middle of the run, and descriptors during the churn stay bounded by the
 *   concurrency.
 *
 * The balancer runs with `--v8-flags=--max-old-space-size=128` unless told otherwise
 * (`--v8-flags=` for V8's defaults): with its default heap limit (a quarter of RAM or
 * so) V8 collects lazily and the resident size climbs for minutes before it levels
 * off, which says nothing about retention within 60 s. With a bounded heap, garbage
 * is collected, a leak shows as growth and, at worst, as an out-of-memory exit.
 *
 * Usage: `deno task soak`, or `deno run --allow-net=127.0.0.1 --allow-read
 * --allow-write --allow-run --allow-env --allow-sys stress/soak.ts [--seconds=60]
 * [--concurrency=8] [--bytes=4096] [--rss-slack=0.1] [--v8-flags=--max-old-space-size=128]
 * [--json=FILE]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { delay, until } from "../testing/poll.ts";
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
    seconds: { type: "string", default: "60" },
    concurrency: { type: "string", default: "8" },
    bytes: { type: "string", default: "4096" },
    "rss-slack": { type: "string", default: "0.1" },
    "v8-flags": { type: "string", default: "--max-old-space-size=128" },
    json: { type: "string" },
  },
});
const PROCESSES = 4;
const DURATION_MS = Number(values.seconds) * 1000;
const CONCURRENCY = Number(values.concurrency);
const BYTES = Number(values.bytes);
const RSS_SLACK = Number(values["rss-slack"]);

interface Row extends ProcSample {
  label: string;
  atS: number;
  open?: number;
  active?: number;
  limiterSlots?: number;
  auditRecords: number;
}

const rows: Row[] = [];
const checks = new Checks();
const { failures, check } = checks;

console.log(`mtlb soak suite: ${conditions()}`);
const startedAt = new Date();
await runSuite("mtlb_soak_", checks, async (dir) => {
  const pki = await makePki(dir, PROCESSES);
  const upstream = await startUpstream();
  await using _upstream = upstream.child;
  await using lb = await BalancerProcess.start(
    dir,
    // Twice the loops: a loop may reconnect a moment before the balancer has released
    // the slot of its previous connection.
    stressConfig(pki, upstream.address, { cap: 2 * CONCURRENCY }),
    { v8Flags: values["v8-flags"] },
  );
  console.log(`balancer pid ${lb.pid} on 127.0.0.1:${lb.port}, admin ${lb.admin ?? "none"}`);
  let t0 = performance.now();
  const audited = () => Object.values(lb.logs.ended).reduce((a, b) => a + b, 0);
  const record = async (label: string): Promise<Row> => {
    const status = await lb.status();
    const row: Row = {
      label,
      atS: Math.round((performance.now() - t0) / 100) / 10,
      ...(await lb.sample()),
      auditRecords: audited(),
    };
    if (status !== undefined) {
      row.open = status.connections.open;
      row.active = status.connections.active;
      row.limiterSlots = status.clients.reduce((n, c) => n + c.active, 0);
    }
    rows.push(row);
    console.log(
      `  ${row.atS}s ${label}: fds ${row.fds}, rss ${row.rssMiB} MiB (peak ${row.peakRssMiB}), threads ${row.threads}, open ${row.open}, active ${row.active}, ${row.auditRecords} connections so far`,
    );
    return row;
  };
  const before = await record("idle, before");

  const clients = startClients(pki, lb.port, "churn", {
    duration: DURATION_MS,
    concurrency: CONCURRENCY,
    bytes: BYTES,
  });
  let report: ClientReport;
  const samples: Row[] = [];
  try {
    await Promise.all(clients.map((c) => c.json<ClientReport>())); // ready
    for (const c of clients) await c.send("go");
    t0 = performance.now();
    const done = Promise.all(clients.map((c) => c.json<ClientReport>()));
    // Start (after a warm-up), then every tenth of the run, the last just before the end.
    const at = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97];
    for (const fraction of at) {
      await delay(Math.max(0, DURATION_MS * fraction - (performance.now() - t0)));
      samples.push(await record(`churning, ${Math.round(fraction * 100)}%`));
    }
    report = total(await done);
  } finally {
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
  }
  const idle = await until(async () => {
    const s = await lb.status();
    return s === undefined ||
      (s.connections.open === 0 && s.connections.active === 0 &&
        s.clients.every((c) => c.active === 0));
  }, 30_000);
  const after = await record("idle, after");

  const seconds = (report.elapsedMs ?? DURATION_MS) / 1000;
  console.log(
    `${report.ok} connections in ${seconds.toFixed(1)} s (${
      (report.ok / seconds).toFixed(0)
    }/s), ${report.bytesVerified} bytes echoed; handshake p50 ${report.handshakeMs.p50} ms, p99 ${report.handshakeMs.p99} ms, max ${report.handshakeMs.max} ms`,
  );
  check(errorCount(report.errors) === 0, `no client errors ${JSON.stringify(report.errors)}`);
  check(
    report.bytesVerified === report.ok * BYTES,
    `${report.bytesVerified} bytes echoed byte-exact for ${report.ok} connections`,
  );
  check(audited() === report.ok, `${audited()} audit records for ${report.ok} connections`);
  check(Object.keys(lb.logs.denied).length === 0, `no refusals ${JSON.stringify(lb.logs.denied)}`);
  check(
    Object.keys(lb.logs.handshakeFailed).length === 0,
    `no failed handshakes ${JSON.stringify(lb.logs.handshakeFailed)}`,
  );
  check(
    lb.logs.errors.length === 0,
    `no errors logged ${JSON.stringify(lb.logs.errors.slice(0, 5))}`,
  );
  check(idle, "open and active connections and limiter slots back to 0");
  check(after.fds === before.fds, `fds back to ${before.fds} (${after.fds})`);
  const maxFds = before.fds + 2 * PROCESSES * CONCURRENCY + 8;
  check(
    samples.every((s) => s.fds <= maxFds),
    `fds while churning at most ${maxFds} (${Math.max(...samples.map((s) => s.fds))})`,
  );
  const middle = samples[Math.floor(samples.length / 2) - 1]!;
  const end = samples.at(-1)!;
  check(
    end.rssMiB <= middle.rssMiB * (1 + RSS_SLACK),
    `rss ${end.rssMiB} MiB at the end within ${
      RSS_SLACK * 100
    }% of ${middle.rssMiB} MiB at the middle`,
  );
  const code = await lb.stop();
  check(code === 0, `balancer exited ${code} on SIGTERM`);

  const summary = {
    suite: "soak",
    startedAt: startedAt.toISOString(),
    conditions: conditions(),
    seconds,
    concurrency: PROCESSES * CONCURRENCY,
    connections: report.ok,
    bytesVerified: report.bytesVerified,
    errors: report.errors,
    handshakeMs: report.handshakeMs,
    samples: rows,
    failures,
  };
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(summary, null, 2));
  }
});
