/**
 * Passive health under stress, two parts; everything on 127.0.0.1, the balancer
 * (`main.ts`, default passive health settings), the upstreams and the client
 * processes are separate processes.
 *
 * 1. **Burst**: `--clients` (default 2,000) simultaneous new mTLS connections, from
 *    four client processes, through the balancer to `--upstreams` (default 2) echo
 *    upstreams that listen with a small accept queue (`--backlog`, default 16): their
 *    queues overflow and the kernel drops SYNs, so some dials wait for a SYN
 *    retransmission or time out. Each client echoes `--bytes` (default 4 KiB) byte
 *    for byte and closes.
 * 2. **Quit** (`--quit-seconds`, default 20; 0 skips it): two client processes keep
 *    opening connections, writing `QUIT` (the upstream answers `+OK` and closes, as
 *    Redis does) and then writing more until the balancer closes the connection
 *    under them (the upstream's kernel resets those bytes), while two other client
 *    processes run connect, echo, close in a loop.
 *
 * Checks, each failing the run (exit 1):
 * - burst: every connection succeeds (no error, no refusal) with its echo byte-exact;
 * - quit: every connection of the other clients succeeds, and no upstream is ejected;
 * - after each part, the balancer's open connections are back to 0 and its open file
 *   descriptors back to where they started, and its audit log has one record per
 *   forwarded connection.
 *
 * Figures recorded: elapsed time, handshake percentiles, dial retries, ejections and
 * panic mode seen (from `/metrics`), file descriptors and memory.
 *
 * `--haproxy` runs the burst through HAProxy (`balance leastconn`, `retries 3`,
 * `option redispatch`, `timeout connect 3s`, checks every 30 s) on the same
 * upstreams instead, for comparison; only part 1, no `/metrics`.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-read --allow-write --allow-run=sh,haproxy
 * --allow-sys=loadavg,osRelease,systemMemoryInfo stress/burst_outlier.ts
 * [--clients=2000] [--upstreams=2] [--backlog=16] [--bytes=4096] [--quit-seconds=20]
 * [--haproxy] [--json=FILE]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { delay, until } from "../testing/poll.ts";
import { freePort, waitForPort } from "../testing/ports.ts";
import type { Subprocess } from "../testing/subprocess.ts";
import {
  BalancerProcess,
  Checks,
  type ClientReport,
  conditions,
  errorCount,
  makePki,
  metric,
  type Pki,
  type ProcSample,
  runSuite,
  sample,
  spawn,
  startBacklogUpstream,
  startClients,
  stressConfig,
  total,
} from "./_common.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "2000" },
    upstreams: { type: "string", default: "2" },
    backlog: { type: "string", default: "16" },
    bytes: { type: "string", default: "4096" },
    "quit-seconds": { type: "string", default: "20" },
    "connect-timeout": { type: "string", default: "3s" },
    "stall-ms": { type: "string", default: "0" },
    "stall-every": { type: "string", default: "250" },
    haproxy: { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const PROCESSES = 4;
const CLIENTS = Number(values.clients);
const SHARE = Math.ceil(CLIENTS / PROCESSES);
const UPSTREAMS = Number(values.upstreams);
const BACKLOG = Number(values.backlog);
const BYTES = Number(values.bytes);
const QUIT_MS = Number(values["quit-seconds"]) * 1000;
const CONNECT_TIMEOUT = values["connect-timeout"];
const STALL_MS = Number(values["stall-ms"]);
const STALL_EVERY = Number(values["stall-every"]);

const checks = new Checks();
const { failures, check } = checks;
const samples: (ProcSample & { label: string })[] = [];
const summary: Record<string, unknown> = {
  suite: "burst_outlier",
  startedAt: new Date().toISOString(),
  conditions: conditions(),
  balancer: values.haproxy ? "haproxy" : "mtlb",
  clients: SHARE * PROCESSES,
  upstreams: UPSTREAMS,
  backlog: BACKLOG,
  connectTimeout: CONNECT_TIMEOUT,
  stall: { ms: STALL_MS, every: STALL_EVERY },
  bytes: BYTES,
};

/**
 * The kernel's count of connections dropped because an accept queue was full
 * (`ListenOverflows` in /proc/net/netstat, for this network namespace).
 */
async function listenOverflows(): Promise<number> {
  // Through `sh`, as Deno grants /proc/net to `--allow-all` only.
  const output = await new Deno.Command("sh", { args: ["-c", "cat /proc/net/netstat"] }).output();
  const lines = new TextDecoder().decode(output.stdout).split("\n");
  const names = lines.find((l) => l.startsWith("TcpExt:"))?.split(" ") ?? [];
  const numbers = lines.filter((l) => l.startsWith("TcpExt:"))[1]?.split(" ") ?? [];
  return Number(numbers[names.indexOf("ListenOverflows")] ?? NaN);
}

/** Runs one burst of `SHARE` connections from each client process; returns the totals. */
async function burst(pki: Pki, port: number): Promise<ClientReport & { overflows: number }> {
  const clients = startClients(pki, port, "burst", { count: SHARE, bytes: BYTES });
  try {
    await Promise.all(clients.map((c) => c.json<ClientReport>())); // ready
    const before = await listenOverflows();
    await Promise.all(clients.map((c) => c.send("go")));
    const report = total(await Promise.all(clients.map((c) => c.json<ClientReport>())));
    return { ...report, overflows: (await listenOverflows()) - before };
  } finally {
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
  }
}

function describe(report: ClientReport & { overflows?: number }): string {
  const overflows = report.overflows === undefined
    ? ""
    : `, ${report.overflows} SYNs or ACKs dropped by full accept queues`;
  return `${report.ok} ok in ${report.elapsedMs} ms${overflows}, handshake p50 ${report.handshakeMs.p50} ms, p99 ${report.handshakeMs.p99} ms, max ${report.handshakeMs.max} ms, errors ${
    JSON.stringify(report.errors)
  }`;
}

/** HAProxy with the same listener settings, `retries 3` and `option redispatch`. */
async function startHaproxy(
  dir: string,
  pki: Pki,
  upstreams: string[],
): Promise<{ child: Subprocess; port: number }> {
  const port = await freePort();
  const pem = `${dir}/haproxy.pem`;
  await Deno.writeTextFile(
    pem,
    (await Deno.readTextFile(pki.cert)) + (await Deno.readTextFile(pki.key)),
  );
  const config = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(
    config,
    `global
    maxconn 9000

defaults
    mode tcp
    timeout connect ${CONNECT_TIMEOUT}
    timeout client 15m
    timeout server 15m
    retries 3
    option redispatch

frontend burst
    bind 127.0.0.1:${port} ssl crt ${pem} ca-file ${pki.ca} verify required ssl-min-ver TLSv1.3
    default_backend echo

backend echo
    balance leastconn
${upstreams.map((u, i) => `    server u${i} ${u} check inter 30s rise 1 fall 1`).join("\n")}
`,
  );
  const child = spawn(["haproxy", "-db", "-f", config], {
    name: "HAProxy",
    stop: { signal: "SIGTERM" },
  });
  await waitForPort(port, { process: child, guardMs: 10_000 });
  return { child, port };
}

console.log(`mtlb burst and quit suite: ${conditions()}`);
await runSuite("mtlb_burst_", checks, async (dir) => {
  const pki = await makePki(dir, PROCESSES);
  const upstreams = await Promise.all(
    Array.from(
      { length: UPSTREAMS },
      () => startBacklogUpstream({ backlog: BACKLOG, stallMs: STALL_MS, stallEvery: STALL_EVERY }),
    ),
  );
  await using _upstreams = {
    [Symbol.asyncDispose]: () =>
      Promise.all(upstreams.map((u) => u.child[Symbol.asyncDispose]())).then(() => {}),
  };
  const addresses = upstreams.map((u) => u.address);
  console.log(
    `${UPSTREAMS} upstreams with accept queues of ${BACKLOG}, stalling ${STALL_MS} ms every ${STALL_EVERY} connections: ${
      addresses.join(", ")
    }`,
  );

  if (values.haproxy) {
    const haproxy = await startHaproxy(dir, pki, addresses);
    await using _haproxy = haproxy.child;
    const before = await sample(haproxy.child.pid);
    console.log(`burst through HAProxy: ${SHARE * PROCESSES} simultaneous connections`);
    const report = await burst(pki, haproxy.port);
    console.log(`  ${describe(report)}`);
    await delay(1000);
    const after = await sample(haproxy.child.pid);
    summary.burst = { ...report, fdsBefore: before.fds, fdsAfter: after.fds };
    check(report.ok === SHARE * PROCESSES, `HAProxy burst: all ${SHARE * PROCESSES} succeeded`);
    check(errorCount(report.errors) === 0, `HAProxy burst: no errors`);
  } else {
    await mtlb(dir, pki, addresses);
  }
  summary.samples = samples;
  summary.failures = failures;
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(summary, null, 2));
  }
});

/** Both parts through mtlb. */
async function mtlb(dir: string, pki: Pki, addresses: string[]): Promise<void> {
  await using lb = await BalancerProcess.start(
    dir,
    stressConfig(pki, addresses, { cap: SHARE, extra: `connect_timeout = "${CONNECT_TIMEOUT}"` }),
  );
  console.log(`balancer pid ${lb.pid} on 127.0.0.1:${lb.port}, admin ${lb.admin}`);
  const record = async (label: string): Promise<ProcSample> => {
    await lb.status(); // the admin connection, kept alive, counts in every sample
    const row = { label, ...(await lb.sample()) };
    samples.push(row);
    console.log(`  ${label}: fds ${row.fds}, rss ${row.rssMiB} MiB (peak ${row.peakRssMiB})`);
    return row;
  };
  const settle = async (what: string): Promise<void> => {
    const idle = await until(async () => {
      const s = await lb.status();
      return s !== undefined && s.connections.open === 0 && s.connections.active === 0;
    }, 60_000);
    check(idle, `${what}: open and active connections back to 0`);
  };
  const baseline = await record("idle, before any client");

  // Part 1: the burst.
  console.log(`burst: ${SHARE * PROCESSES} simultaneous connections from ${PROCESSES} processes`);
  let peakFds = baseline.fds;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakFds = Math.max(peakFds, (await lb.sample()).fds);
      await delay(200);
    }
  })();
  const report = await burst(pki, lb.port);
  sampling = false;
  await sampler;
  console.log(`  ${describe(report)}`);
  const metrics = await lb.metrics();
  const burstFigures = {
    ...report,
    peakFds,
    retries: metric(metrics, "mtlb_connect_retries_total"),
    ejections: metric(metrics, "mtlb_outlier_ejections_total"),
    denied: { ...lb.logs.denied },
  };
  console.log(
    `  dial retries ${burstFigures.retries}, ejections ${burstFigures.ejections}, peak fds ${peakFds}`,
  );
  summary.burst = burstFigures;
  check(report.ok === SHARE * PROCESSES, `burst: all ${SHARE * PROCESSES} succeeded`);
  check(errorCount(report.errors) === 0, `burst: no errors ${JSON.stringify(report.errors)}`);
  check(
    report.bytesVerified === SHARE * PROCESSES * BYTES,
    `burst: ${report.bytesVerified} bytes echoed byte-exact`,
  );
  check(
    Object.keys(lb.logs.denied).length === 0,
    `burst: no refusals ${JSON.stringify(lb.logs.denied)}`,
  );
  await settle("burst");
  const afterBurst = await record("after the burst");
  check(afterBurst.fds === baseline.fds, `burst: fds back to ${baseline.fds} (${afterBurst.fds})`);
  const ended = Object.values(lb.logs.ended).reduce((a, b) => a + b, 0);
  check(ended === report.ok, `burst: ${ended} audit records for ${report.ok} connections`);

  if (QUIT_MS > 0) {
    // Part 2: the same balancer config in front of upstreams that close after QUIT.
    await lb.stop();
    const quitters = await Promise.all(
      Array.from({ length: UPSTREAMS }, () => startBacklogUpstream({ backlog: 511, quit: true })),
    );
    await using _quitters = {
      [Symbol.asyncDispose]: () =>
        Promise.all(quitters.map((u) => u.child[Symbol.asyncDispose]())).then(() => {}),
    };
    await using qlb = await BalancerProcess.start(
      dir,
      stressConfig(pki, quitters.map((u) => u.address), { cap: 1000 }),
    );
    await qlb.status();
    const quitBaseline = await sample(qlb.pid);
    console.log(`quit: 2 processes write after QUIT, 2 run connect/echo/close, ${QUIT_MS} ms`);
    const attackers = startClients({ ...pki, clients: pki.clients.slice(0, 2) }, qlb.port, "quit", {
      concurrency: 16,
      duration: QUIT_MS,
    });
    const others = startClients({ ...pki, clients: pki.clients.slice(2) }, qlb.port, "churn", {
      concurrency: 8,
      duration: QUIT_MS,
      bytes: 1024,
    });
    let attack: ClientReport;
    let served: ClientReport;
    try {
      await Promise.all([...attackers, ...others].map((c) => c.json<ClientReport>())); // ready
      await Promise.all([...attackers, ...others].map((c) => c.send("go")));
      const attackReports = await Promise.all(attackers.map((c) => c.json<ClientReport>()));
      attack = total(attackReports);
      attack.ends = {};
      for (const r of attackReports) {
        for (const [k, v] of Object.entries(r.ends ?? {})) {
          attack.ends[k] = (attack.ends[k] ?? 0) + v;
        }
      }
      served = total(await Promise.all(others.map((c) => c.json<ClientReport>())));
    } finally {
      await Promise.all([...attackers, ...others].map((c) => c[Symbol.asyncDispose]()));
    }
    const quitMetrics = await qlb.metrics();
    const resets = qlb.logs.ended["upstream_reset"] ?? 0;
    console.log(
      `  writers: ${attack.ok} connections closed under them (${
        JSON.stringify(attack.ends)
      }), errors ${JSON.stringify(attack.errors)}; audit: ${JSON.stringify(qlb.logs.ended)}`,
    );
    console.log(`  others: ${describe(served)}`);
    const ejections = metric(quitMetrics, "mtlb_outlier_ejections_total");
    summary.quit = {
      durationMs: QUIT_MS,
      writers: { connections: attack.ok, ends: attack.ends, errors: attack.errors },
      others: served,
      upstreamResets: resets,
      audit: { ...qlb.logs.ended },
      ejections,
      denied: { ...qlb.logs.denied },
    };
    check(attack.ok > 0 && resets > 0, `quit: ${resets} upstream resets after QUIT seen`);
    check(ejections === 0, `quit: no upstream ejected (${ejections} ejections)`);
    check(served.ok > 0, `quit: the other clients made ${served.ok} connections`);
    check(
      errorCount(served.errors) === 0,
      `quit: every connection of the other clients succeeded ${JSON.stringify(served.errors)}`,
    );
    check(
      Object.keys(qlb.logs.denied).length === 0,
      `quit: no refusals ${JSON.stringify(qlb.logs.denied)}`,
    );
    const idle = await until(async () => {
      const s = await qlb.status();
      return s !== undefined && s.connections.open === 0 && s.connections.active === 0;
    }, 60_000);
    check(idle, "quit: open and active connections back to 0");
    const quitAfter = await sample(qlb.pid);
    samples.push({ label: "quit: after", ...quitAfter });
    check(
      quitAfter.fds === quitBaseline.fds,
      `quit: fds back to ${quitBaseline.fds} (${quitAfter.fds})`,
    );
    const quitEnded = Object.values(qlb.logs.ended).reduce((a, b) => a + b, 0);
    check(
      quitEnded === attack.ok + served.ok,
      `quit: ${quitEnded} audit records for ${attack.ok + served.ok} connections`,
    );
    check(await qlb.stop() === 0, "quit: balancer exited 0 on SIGTERM");
  } else {
    check(await lb.stop() === 0, "balancer exited 0 on SIGTERM");
  }
}
