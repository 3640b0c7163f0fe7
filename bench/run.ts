/**
 * Side-by-side benchmark of mtlb against HAProxy: `deno task bench [options]`.
 *
 * Starts two `redis-server`s and a byte sink as upstreams, generates a PKI, runs mtlb
 * and HAProxy with equivalent configs on it, and measures each in turn, interleaved
 * over several rounds, with clients neither of them ships: `redis-benchmark`, `socat`,
 * `openssl s_time`, plus two small Deno clients in this folder for held connections and
 * round-trip latency. Prints a table of medians and writes `bench/RESULTS.md`.
 * Everything listens on 127.0.0.1 and everything it starts is stopped on exit, on
 * failure and on Ctrl-C. See bench/README.md.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { writeDevPki } from "../lib/pki/dev_pki.ts";

// ---------------------------------------------------------------------------------------
// Options

const USAGE = `Usage: deno task bench [options]

  --rounds N         measurement rounds, targets interleaved (default 3; 1 with --quick)
  --quick            a smoke run: small sizes, one round, about a minute; writes no file
                     unless --out is given
  --mtlb-workers N   also compare mtlb with [server] workers = N against HAProxy
                     nbthread N on the request rate (default 2; 1 skips it)
  --out FILE         where to write the results (default bench/RESULTS.md)
  --install          install missing tools with apt-get (as root)
  --help             show this text

Needs redis-server, redis-benchmark, haproxy, socat and openssl on PATH.`;

/** Sizes of one run. */
interface Sizes {
  /** Requests per redis-benchmark test (SET, then GET). */
  requests: number;
  /** Bytes pushed per bulk transfer. */
  bulkBytes: number;
  /** Seconds each `openssl s_time` runs. */
  handshakeSeconds: number;
  /** Parallel `openssl s_time` processes. */
  handshakeClients: number;
  /** Idle connections held for the memory figure. */
  idleConnections: number;
  /** Sequential PING round trips for the latency figure. */
  roundTrips: number;
  /** Requests per target before the first round, to warm up JIT and caches. */
  warmupRequests: number;
}

const FULL: Sizes = {
  requests: 100_000,
  bulkBytes: 512 * 1024 * 1024,
  handshakeSeconds: 5,
  handshakeClients: 4,
  idleConnections: 1_000,
  roundTrips: 2_000,
  warmupRequests: 20_000,
};

const QUICK: Sizes = {
  requests: 20_000,
  bulkBytes: 128 * 1024 * 1024,
  handshakeSeconds: 2,
  handshakeClients: 4,
  idleConnections: 500,
  roundTrips: 1_000,
  warmupRequests: 5_000,
};

const REDIS_CLIENTS = 50;
/** Label of the Deno floor target (bench/_floor.ts). */
const FLOOR = "Deno floor";
/** Connections opened and closed on a fresh balancer before its memory baseline. */
const MEMORY_WARMUP = 100;
const TOOLS = ["redis-server", "redis-benchmark", "haproxy", "socat", "openssl"] as const;
const APT_PACKAGES = ["redis-server", "redis-tools", "haproxy", "socat", "openssl"];
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(HERE);

/** Bad command-line arguments. */
class UsageError extends Error {
  /**
   * @param message What is wrong with the arguments.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** A failure of the benchmark itself (a tool missing, a process that died, a bad reply). */
class BenchError extends Error {
  /**
   * @param message What went wrong.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BenchError";
  }
}

// ---------------------------------------------------------------------------------------
// Processes: every child is registered, and stopped on exit, failure or a signal.

const live = new Set<Proc>();
let nofile = 0;

/** A long-running child process whose standard error is kept for error messages. */
class Proc {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;
  #stderr = "";

  /**
   * Starts `cmd` through `sh`, with the raised open-files limit.
   *
   * @param name A label for messages.
   * @param cmd The program and its arguments.
   * @param options Whether to pipe standard input and output.
   */
  constructor(
    name: string,
    cmd: readonly string[],
    options: { stdin?: boolean; stdout?: boolean } = {},
  ) {
    this.name = name;
    this.child = shell(cmd, {
      stdin: options.stdin ? "piped" : "null",
      stdout: options.stdout ? "piped" : "null",
      stderr: "piped",
      cwd: ROOT,
    }).spawn();
    live.add(this);
    this.#collectStderr(this.child.stderr);
    this.status = this.child.status.then((status) => {
      this.#exited = true;
      live.delete(this);
      return status;
    });
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The end of what the process wrote to standard error. */
  get stderrTail(): string {
    return this.#stderr.trim().split("\n").slice(-8).join("\n");
  }

  async #collectStderr(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        this.#stderr = (this.#stderr + decoder.decode(chunk, { stream: true })).slice(-8192);
      }
    } catch {
      // The process is gone.
    }
  }

  /** Sends SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.exited) return;
    try {
      this.child.kill("SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, graceMs);
    await this.status;
    clearTimeout(timer);
  }

  /** Why the process is unusable, for an error message. */
  describeExit(status: Deno.CommandStatus): string {
    const how = status.signal !== null ? `signal ${status.signal}` : `status ${status.code}`;
    return `${this.name} exited with ${how}${this.stderrTail ? `:\n${this.stderrTail}` : ""}`;
  }
}

/**
 * A command run through `sh -c 'ulimit -n N; exec "$@"'`, so that every child gets the
 * open-files limit the idle-connection test needs; `exec` keeps the child's PID.
 */
function shell(cmd: readonly string[], options: Deno.CommandOptions = {}): Deno.Command {
  return new Deno.Command("sh", {
    ...options,
    args: ["-c", '[ "$0" = 0 ] || ulimit -n "$0" 2>/dev/null; exec "$@"', String(nofile), ...cmd],
  });
}

/** Runs a command to completion within `timeoutMs`, returning its output. */
async function run(
  cmd: readonly string[],
  timeoutMs: number,
  options: { env?: Record<string, string>; inherit?: boolean } = {},
): Promise<{ stdout: string; stderr: string }> {
  const child = shell(cmd, {
    stdin: "null",
    stdout: options.inherit ? "inherit" : "piped",
    stderr: options.inherit ? "inherit" : "piped",
    cwd: ROOT,
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  const proc = { child, timedOut: false };
  const killer = setTimeout(() => {
    proc.timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  running.add(child);
  try {
    const output = await child.output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    if (proc.timedOut) {
      throw new BenchError(`${cmd[0]} did not finish within ${timeoutMs / 1000} s`);
    }
    if (!output.success) {
      const tail = (stderr.trim() || stdout.trim()).split("\n").slice(-8).join("\n");
      throw new BenchError(
        `${cmd.join(" ")} failed with ${
          output.signal ? `signal ${output.signal}` : `status ${output.code}`
        }${tail ? `:\n${tail}` : ""}`,
      );
    }
    return { stdout, stderr };
  } finally {
    clearTimeout(killer);
    running.delete(child);
  }
}

const running = new Set<Deno.ChildProcess>();
let tempDir: string | undefined;
let cleaning: Promise<void> | undefined;

/** Stops every child and removes the temporary directory; safe to call twice. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of running) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await Promise.all([...live].reverse().map((proc) => proc.stop()));
    if (tempDir !== undefined) await Deno.remove(tempDir, { recursive: true }).catch(() => {});
  })();
  return cleaning;
}

/** Reads a child's standard output line by line, into a queue with a timed `next()`. */
class LineQueue {
  #lines: string[] = [];
  #waiters: ((line: string | null) => void)[] = [];
  #ended = false;

  /** @param stream The standard output to read. */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for await (const chunk of stream) {
        pending += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          this.#push(pending.slice(0, newline));
          pending = pending.slice(newline + 1);
        }
      }
    } catch {
      // The process is gone.
    }
    this.#ended = true;
    for (const waiter of this.#waiters.splice(0)) waiter(null);
  }

  #push(line: string): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(line);
    else this.#lines.push(line);
  }

  /** Drops lines received so far. */
  clear(): void {
    this.#lines.length = 0;
  }

  /**
   * The next line, or `null` at the end of the stream.
   *
   * @throws {BenchError} When no line arrives within `timeoutMs`.
   */
  next(timeoutMs: number, what: string): Promise<string | null> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new BenchError(`Timed out after ${timeoutMs / 1000} s waiting for ${what}`));
      }, timeoutMs);
      const waiter = (value: string | null) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.#waiters.push(waiter);
    });
  }
}

// ---------------------------------------------------------------------------------------
// Small helpers

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const usedPorts = new Set<number>();

/** A port that is free on 127.0.0.1 now (the kernel's pick), never the same one twice. */
function freePort(): number {
  for (;;) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    listener.close();
    if (!usedPorts.has(port)) {
      usedPorts.add(port);
      return port;
    }
  }
}

/** Waits until `port` accepts a TCP connection, failing early if `proc` exits. */
async function waitForPort(proc: Proc, port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      // Not yet.
    }
    if (proc.exited) throw new BenchError(proc.describeExit(await proc.status));
    if (Date.now() > deadline) {
      throw new BenchError(
        `${proc.name} did not listen on 127.0.0.1:${port} within ${timeoutMs / 1000} s${
          proc.stderrTail ? `:\n${proc.stderrTail}` : ""
        }`,
      );
    }
    await delay(50);
  }
}

/** Whether `name` is an executable on PATH. */
async function onPath(name: string): Promise<boolean> {
  const output = await new Deno.Command("sh", {
    args: ["-c", 'command -v "$0" >/dev/null 2>&1', name],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  return output.success;
}

/** First line of a command's output, or "unknown". */
async function version(cmd: readonly string[], pick = 0): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, 10_000);
    return (stdout || stderr).trim().split("\n")[pick]?.trim() || "unknown";
  } catch {
    return "unknown";
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function log(message: string): void {
  console.error(message);
}

// ---------------------------------------------------------------------------------------
// Memory and threads of a process tree, from /proc. Deno lets only --allow-all read
// /proc/PID, so a shell reads it.

const INSPECT = `tree() {
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done
}
for p in $(tree "$0"); do
  echo "P $p"
  sed -n "s/^VmRSS:[[:space:]]*\\([0-9]*\\) kB/R \\1/p" /proc/"$p"/status 2>/dev/null
  awk '{print "C", $14 + $15}' /proc/"$p"/stat 2>/dev/null
done
for t in /proc/"$0"/task/*/comm; do echo "T $(cat "$t" 2>/dev/null)"; done`;

/** A snapshot of a process and its descendants. */
interface ProcessInfo {
  /** Resident memory of the process and its descendants (VmRSS), KiB. */
  rssKib: number;
  /** Descendant processes. */
  children: number;
  /** Threads of the process running Deno Workers (named `worker-N`). */
  workerThreads: number;
  /** CPU time (user + system) of the process and its live descendants, clock ticks. */
  cpuTicks: number;
}

async function inspect(pid: number): Promise<ProcessInfo> {
  const output = await new Deno.Command("sh", {
    args: ["-c", INSPECT, String(pid)],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const info: ProcessInfo = { rssKib: 0, children: -1, workerThreads: 0, cpuTicks: 0 };
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    if (line.startsWith("P ")) info.children++;
    else if (line.startsWith("R ")) info.rssKib += Number(line.slice(2));
    else if (line.startsWith("T worker-")) info.workerThreads++;
    else if (line.startsWith("C ")) info.cpuTicks += Number(line.slice(2));
  }
  if (info.rssKib === 0) throw new BenchError(`Cannot read the memory of process ${pid}`);
  return info;
}

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`). */
let clockTicks = 100;

/**
 * Runs `work` and returns its result with the CPU time, in ms, that the process tree of
 * `pid` used meanwhile: the balancer's own cost of the work, whatever the client costs.
 */
async function withCpu<T>(pid: number, work: () => Promise<T>): Promise<[T, number]> {
  const before = (await inspect(pid)).cpuTicks;
  const result = await work();
  const after = (await inspect(pid)).cpuTicks;
  return [result, (after - before) * 1000 / clockTicks];
}

/** RSS once it has settled: two samples 250 ms apart within 0.5 %, at most 5 s. */
async function settledRssKib(pid: number): Promise<number> {
  let last = (await inspect(pid)).rssKib;
  for (let i = 0; i < 20; i++) {
    await delay(250);
    const now = (await inspect(pid)).rssKib;
    if (Math.abs(now - last) <= last * 0.005) return now;
    last = now;
  }
  return last;
}

// ---------------------------------------------------------------------------------------
// Setup

/** File paths of the generated PKI. */
interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Server certificate chain and key in one file, as HAProxy's `crt` wants. */
  serverPem: string;
  clientCert: string;
  clientKey: string;
  clientSpki: string;
}

async function generatePki(dir: string): Promise<Pki> {
  const summary = await writeDevPki(dir, { clients: ["bench"] });
  const client = summary.clients[0]!;
  const serverPem = join(dir, "server.pem");
  await Deno.writeTextFile(
    serverPem,
    (await Deno.readTextFile(summary.serverCert)) + (await Deno.readTextFile(summary.serverKey)),
    { mode: 0o600 },
  );
  return {
    ca: summary.caCert,
    serverCert: summary.serverCert,
    serverKey: summary.serverKey,
    serverPem,
    clientCert: client.cert,
    clientKey: client.key,
    clientSpki: client.spkiSha256,
  };
}

/** Upstreams shared by every balancer. */
interface Upstreams {
  redis: [number, number];
  sink: number;
  /** The sink's control port: a connection reads how many connections the sink holds. */
  sinkControl: number;
  sinkLines: LineQueue;
  sinkProc: Proc;
}

async function startUpstreams(): Promise<Upstreams> {
  const redis: [number, number] = [freePort(), freePort()];
  for (const [i, port] of redis.entries()) {
    const proc = new Proc(`redis-server #${i + 1}`, [
      "redis-server",
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      "--maxclients",
      "10000",
      "--daemonize",
      "no",
      "--logfile",
      "",
    ]);
    await waitForPort(proc, port);
  }
  const sink = new Proc("sink", [
    Deno.execPath(),
    "run",
    "--quiet",
    "--allow-net=127.0.0.1",
    join(HERE, "_sink.ts"),
  ], { stdout: true });
  const sinkLines = new LineQueue(sink.child.stdout);
  const first = await sinkLines.next(30_000, "the sink to listen");
  if (first === null) throw new BenchError(sink.describeExit(await sink.status));
  const { port, control } = JSON.parse(first) as { port: number; control: number };
  usedPorts.add(port);
  usedPorts.add(control);
  return { redis, sink: port, sinkControl: control, sinkLines, sinkProc: sink };
}

/** How many connections the sink holds now. */
async function sinkOpen(upstreams: Upstreams): Promise<number> {
  if (upstreams.sinkProc.exited) {
    throw new BenchError(upstreams.sinkProc.describeExit(await upstreams.sinkProc.status));
  }
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: upstreams.sinkControl });
    let text = "";
    for await (const chunk of conn.readable) text += new TextDecoder().decode(chunk);
    return (JSON.parse(text) as { open: number }).open;
  } catch (error) {
    throw new BenchError("Cannot read the sink's connection count", { cause: error });
  }
}

let configs = 0;

/** A balancer under test. */
interface Target {
  /** Label in the table: "mtlb", "HAProxy", "mtlb workers=2", ... */
  label: string;
  kind: "mtlb" | "haproxy" | "floor";
  proc: Proc;
  /** TLS listener forwarding to the two redis servers. */
  redisPort: number;
  /** TLS listener forwarding to the sink. */
  sinkPort: number;
  /**
   * Plain TCP listener (no TLS) forwarding to the two redis servers: HAProxy and the
   * floor have one, for the runtime's cost without TLS. mtlb only speaks mutual TLS.
   */
  tcpPort?: number;
  /** The generated configuration. */
  config: string;
}

async function startMtlb(
  dir: string,
  pki: Pki,
  upstreams: Upstreams,
  workers: number,
  label: string,
): Promise<Target> {
  const redisPort = freePort();
  const sinkPort = freePort();
  const adminPort = freePort();
  const config = join(dir, `mtlb-${++configs}.toml`);
  const q = JSON.stringify;
  const text = `# Generated by bench/run.ts: the equivalent of the HAProxy config next to it.
[server]
workers = ${workers}
handshake_timeout = "5s"
connect_timeout = "3s"
idle_timeout = "15m"
drain_timeout = "1s"

[tls]
ca = ${q(pki.ca)}
cert = ${q(pki.serverCert)}
key = ${q(pki.serverKey)}

# Limits stay on, high enough not to refuse the benchmark's own connections.
[limits]
max_connections_per_client = 100000
connection_rate = { count = 1000000, per = "1s" }

[health]
interval = "30s"
timeout = "1s"
rise = 1
fall = 1

[admin]
listen = "127.0.0.1:${adminPort}"

[log]
format = "json"

[groups.redis]
upstreams = ["127.0.0.1:${upstreams.redis[0]}", "127.0.0.1:${upstreams.redis[1]}"]
listen = "127.0.0.1:${redisPort}"
health = { send = "PING\\r\\n", expect = "+PONG" }

[groups.sink]
upstreams = ["127.0.0.1:${upstreams.sink}"]
listen = "127.0.0.1:${sinkPort}"

[clients.bench]
match = { spki_sha256 = "${pki.clientSpki}" }
groups = ["redis", "sink"]
`;
  await Deno.writeTextFile(config, text);
  // The exact permissions this config needs, from mtlb itself.
  const { stdout } = await run(
    [
      Deno.execPath(),
      "run",
      "--quiet",
      `--allow-read=${config}`,
      "main.ts",
      "permissions",
      "--config",
      config,
    ],
    60_000,
  );
  const flags = stdout.trim().split(/\s+/).filter((token) => token.startsWith("--allow-"));
  if (flags.length === 0) {
    throw new BenchError(`mtlb printed no permissions for ${config}: ${stdout.trim()}`);
  }
  const proc = new Proc(label, [
    Deno.execPath(),
    "run",
    "--quiet",
    ...flags,
    "main.ts",
    "serve",
    "--config",
    config,
    "--log-level",
    "warning",
  ]);
  await waitForPort(proc, redisPort);
  await waitForPort(proc, sinkPort);
  return { label, kind: "mtlb", proc, redisPort, sinkPort, config: text };
}

async function startHaproxy(
  dir: string,
  pki: Pki,
  upstreams: Upstreams,
  threads: number,
  label: string,
): Promise<Target> {
  const redisPort = freePort();
  const sinkPort = freePort();
  const tcpPort = freePort();
  const config = join(dir, `haproxy-${++configs}.cfg`);
  // Each connection takes two descriptors; leave room for listeners, checks and logs.
  const maxconn = Math.min(10_000, Math.floor((nofile - 200) / 2));
  const bind = `ssl crt ${pki.serverPem} ca-file ${pki.ca} verify required ssl-min-ver TLSv1.3`;
  const text = `# Generated by bench/run.ts: the equivalent of the mtlb config next to it.
global
    nbthread ${threads}
    maxconn ${maxconn}

defaults
    mode tcp
    timeout connect 3s
    timeout client 15m
    timeout server 15m

frontend redis
    bind 127.0.0.1:${redisPort} ${bind}
    default_backend redis

backend redis
    balance leastconn
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    server redis1 127.0.0.1:${upstreams.redis[0]} check inter 30s rise 1 fall 1
    server redis2 127.0.0.1:${upstreams.redis[1]} check inter 30s rise 1 fall 1

frontend sink
    bind 127.0.0.1:${sinkPort} ${bind}
    default_backend sink

frontend redis_tcp
    bind 127.0.0.1:${tcpPort}
    default_backend redis

backend sink
    balance leastconn
    server sink 127.0.0.1:${upstreams.sink} check inter 30s rise 1 fall 1
`;
  await Deno.writeTextFile(config, text);
  await run(["haproxy", "-c", "-q", "-f", config], 30_000);
  const proc = new Proc(label, ["haproxy", "-db", "-f", config]);
  await waitForPort(proc, redisPort);
  await waitForPort(proc, sinkPort);
  await waitForPort(proc, tcpPort);
  return { label, kind: "haproxy", proc, redisPort, sinkPort, tcpPort, config: text };
}

/** The Deno floor (bench/_floor.ts): node:tls + pipe(), with none of mtlb's features. */
async function startFloor(pki: Pki, upstreams: Upstreams, label: string): Promise<Target> {
  const redisPort = freePort();
  const sinkPort = freePort();
  const tcpPort = freePort();
  const proc = new Proc(label, [
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=127.0.0.1`,
    `--allow-read=${pki.ca},${pki.serverCert},${pki.serverKey}`,
    join(HERE, "_floor.ts"),
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
  await waitForPort(proc, redisPort);
  await waitForPort(proc, sinkPort);
  await waitForPort(proc, tcpPort);
  return { label, kind: "floor", proc, redisPort, sinkPort, tcpPort, config: "" };
}

/** A fresh instance of a single-threaded target, for the memory figure. */
function startFresh(dir: string, pki: Pki, upstreams: Upstreams, target: Target): Promise<Target> {
  const label = `${target.label} (fresh)`;
  switch (target.kind) {
    case "mtlb":
      return startMtlb(dir, pki, upstreams, 1, label);
    case "haproxy":
      return startHaproxy(dir, pki, upstreams, 1, label);
    case "floor":
      return startFloor(pki, upstreams, label);
  }
}

// ---------------------------------------------------------------------------------------
// Measurements

/** Requests per second for SET and GET, from `redis-benchmark --csv`. */
async function requestRate(
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

/** MB/s (10^6 bytes) of one bulk transfer through `target` to the sink, timed at the sink. */
async function bulkThroughput(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  bytes: number,
): Promise<number> {
  upstreams.sinkLines.clear();
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
  let received: { bytes: number; ms: number } | undefined;
  const arrival = (async () => {
    for (;;) {
      const line = await upstreams.sinkLines.next(timeoutMs, "the bulk transfer to reach the sink");
      if (line === null) throw new BenchError("The sink exited during a bulk transfer");
      received = JSON.parse(line);
      return performance.now();
    }
  })();
  const [, ended] = await Promise.all([sender, arrival]);
  if (received!.bytes !== bytes) {
    throw new BenchError(
      `The sink received ${received!.bytes} bytes through ${target.label}, expected ${bytes}`,
    );
  }
  return bytes / 1e6 / ((ended - started) / 1000);
}

/** Full mTLS handshakes per second, summed over parallel `openssl s_time -new`. */
async function handshakeRate(
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

/** Waits until the sink holds no connection: those of the previous test are closed. */
async function sinkQuiet(upstreams: Upstreams): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (await sinkOpen(upstreams) > 0) {
    if (Date.now() > deadline) throw new BenchError("The sink still holds connections after 30 s");
    await delay(100);
  }
}

/**
 * Opens `count` mTLS connections through `target` and returns once all of them reach
 * the sink, so the balancer holds each one end to end. Closing the returned handle
 * closes them.
 */
async function holdConnections(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  count: number,
): Promise<AsyncDisposable> {
  const holder = new Proc(`idle connections to ${target.label}`, [
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=127.0.0.1:${target.sinkPort}`,
    `--allow-read=${pki.ca},${pki.clientCert},${pki.clientKey}`,
    join(HERE, "_hold_connections.ts"),
    "--port",
    String(target.sinkPort),
    "--count",
    String(count),
    "--ca",
    pki.ca,
    "--cert",
    pki.clientCert,
    "--key",
    pki.clientKey,
  ], { stdin: true, stdout: true });
  const release = async (): Promise<void> => {
    await holder.child.stdin.close().catch(() => {});
    const timer = setTimeout(() => holder.stop(), 10_000);
    await holder.status;
    clearTimeout(timer);
  };
  try {
    const lines = new LineQueue(holder.child.stdout);
    const line = await lines.next(120_000, `${count} connections to ${target.label}`);
    if (line === null) throw new BenchError(holder.describeExit(await holder.status));
    const deadline = Date.now() + 60_000;
    let reached = 0;
    while ((reached = await sinkOpen(upstreams)) < count) {
      if (Date.now() > deadline) {
        throw new BenchError(
          `Only ${reached} of ${count} connections held through ${target.label} reached the sink within 60 s`,
        );
      }
      await delay(100);
    }
  } catch (error) {
    await release();
    throw error;
  }
  return { [Symbol.asyncDispose]: release };
}

/**
 * KiB of RSS growth per idle mTLS connection of a freshly started balancer, over
 * `count` held connections. A fresh process has no free heap left over from earlier
 * tests for the connections to reuse; a first batch of connections, opened and closed
 * before the baseline, takes one-time costs (code paths compiled, pools and caches
 * created) out of the figure.
 */
async function memoryPerConnection(
  pki: Pki,
  target: Target,
  upstreams: Upstreams,
  count: number,
): Promise<number> {
  const pid = target.proc.child.pid;
  await sinkQuiet(upstreams);
  {
    await using _warmup = await holdConnections(pki, target, upstreams, MEMORY_WARMUP);
  }
  await sinkQuiet(upstreams);
  const before = await settledRssKib(pid);
  await using _held = await holdConnections(pki, target, upstreams, count);
  const after = await settledRssKib(pid);
  return (after - before) / count;
}

/** p50 and p99 of sequential PING round trips, in microseconds, per port. */
async function pingLatency(
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
    join(HERE, "_ping_latency.ts"),
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

// ---------------------------------------------------------------------------------------
// Results

/** Samples per metric and target, one per round. */
class Samples {
  #values = new Map<string, number[]>();

  add(metric: string, target: string, value: number): void {
    const key = `${metric}\u0000${target}`;
    const list = this.#values.get(key) ?? [];
    list.push(value);
    this.#values.set(key, list);
  }

  get(metric: string, target: string): number[] {
    return this.#values.get(`${metric}\u0000${target}`) ?? [];
  }

  median(metric: string, target: string): number | undefined {
    const values = this.get(metric, target);
    return values.length === 0 ? undefined : median(values);
  }
}

/** One row of the table: a figure for an mtlb target against a HAProxy target. */
interface Row {
  metric: string;
  label: string;
  unit: string;
  higherIsBetter: boolean;
  digits: number;
  /** The issue's bar on mtlb/HAProxy, if any. */
  bar?: number;
  mtlb: string;
  haproxy: string;
  /** The Deno floor's target label, when it ran this figure. */
  floor?: string;
  /** Metric and target of a plaintext-direct reference value. */
  direct?: [string, string];
}

function format(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function table(rows: readonly Row[], samples: Samples): string {
  const lines = [
    "| figure | unit | mtlb | HAProxy | mtlb/HAProxy | bar | met | Deno floor | floor/HAProxy | direct (plaintext) |",
    "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
  ];
  // A ratio of a negative or zero figure (added latency below noise) means nothing.
  const ratioOf = (a: number | undefined, b: number | undefined) =>
    a !== undefined && b !== undefined && a > 0 && b > 0 ? a / b : undefined;
  for (const row of rows) {
    const m = samples.median(row.metric, row.mtlb);
    const h = samples.median(row.metric, row.haproxy);
    const f = row.floor === undefined ? undefined : samples.median(row.metric, row.floor);
    const ratio = ratioOf(m, h);
    const floorRatio = ratioOf(f, h);
    const bar = row.bar === undefined
      ? ""
      : `${row.higherIsBetter ? ">=" : "<="} ${row.bar.toFixed(1)}`;
    const met = row.bar === undefined || ratio === undefined
      ? ""
      : (row.higherIsBetter ? ratio >= row.bar : ratio <= row.bar)
      ? "yes"
      : "no";
    const direct = row.direct ? format(samples.median(...row.direct), row.digits) : "";
    lines.push(
      `| ${row.label} | ${row.unit} | ${format(m, row.digits)} | ${format(h, row.digits)} | ${
        ratio === undefined ? "n/a" : ratio.toFixed(2)
      } | ${bar} | ${met} | ${row.floor === undefined ? "" : format(f, row.digits)} | ${
        row.floor === undefined ? "" : floorRatio === undefined ? "n/a" : floorRatio.toFixed(2)
      } | ${direct} |`,
    );
  }
  return lines.join("\n");
}

function perRoundTable(rows: readonly Row[], samples: Samples, rounds: number): string {
  const header = Array.from({ length: rounds }, (_, i) => `round ${i + 1}`);
  const lines = [
    `| figure | target | ${header.join(" | ")} |`,
    `| --- | --- | ${header.map(() => "---:").join(" | ")} |`,
  ];
  for (const row of rows) {
    const targets = [
      row.mtlb,
      row.haproxy,
      ...(row.floor ? [row.floor] : []),
      ...(row.direct ? [row.direct[1]] : []),
    ];
    for (const target of targets) {
      const metric = row.direct && target === row.direct[1] ? row.direct[0] : row.metric;
      const values = samples.get(metric, target);
      if (values.length === 0) continue;
      const cells = Array.from({ length: rounds }, (_, i) => format(values[i], row.digits));
      lines.push(`| ${row.label} | ${target} | ${cells.join(" | ")} |`);
    }
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------
// Main

async function checkTools(install: boolean): Promise<void> {
  const missing: string[] = [];
  for (const tool of TOOLS) if (!(await onPath(tool))) missing.push(tool);
  if (missing.length === 0) return;
  const command = `apt-get install -y ${APT_PACKAGES.join(" ")}`;
  if (!install) {
    throw new BenchError(
      `Missing tools: ${
        missing.join(", ")
      }. Install them (Debian, Ubuntu) with:\n  sudo ${command}\nor run \`deno task bench --install\` as root`,
    );
  }
  if (Deno.uid() !== 0) {
    throw new BenchError(
      `Missing tools: ${missing.join(", ")}. --install needs root; run instead:\n  sudo ${command}`,
    );
  }
  if (!(await onPath("apt-get"))) {
    throw new BenchError(
      `Missing tools: ${
        missing.join(", ")
      }, and apt-get is not available: install redis (server and tools), haproxy, socat and openssl with your package manager`,
    );
  }
  log(`Installing ${missing.join(", ")} with apt-get`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update"], 600_000, { env, inherit: true });
  await run(["apt-get", "install", "-y", ...APT_PACKAGES], 600_000, { env, inherit: true });
  const still = [];
  for (const tool of TOOLS) if (!(await onPath(tool))) still.push(tool);
  if (still.length > 0) throw new BenchError(`Still missing after apt-get: ${still.join(", ")}`);
}

/** Raises the open-files limit children get, or explains why it cannot. */
async function checkOpenFiles(sizes: Sizes): Promise<void> {
  const { stdout } = await new Deno.Command("sh", {
    args: ["-c", "ulimit -Sn; ulimit -Hn"],
    stdout: "piped",
  }).output().then((o) => ({ stdout: new TextDecoder().decode(o.stdout) }));
  const [soft, hard] = stdout.trim().split("\n").map((v) =>
    v === "unlimited" ? Infinity : Number(v)
  );
  nofile = Math.min(hard ?? 1024, Math.max(soft ?? 1024, 65_536));
  // The balancer holds two descriptors per idle connection; HAProxy also sizes maxconn from it.
  const needed = sizes.idleConnections * 2 + 1_000;
  if (nofile < needed) {
    throw new BenchError(
      `The open-files limit is ${hard} (hard), the benchmark needs ${needed}: raise it, for example with \`ulimit -n ${needed}\` as root`,
    );
  }
}

async function machine(): Promise<string[]> {
  // Deno lets only --allow-all read /proc, so a shell reads it.
  const read = (path: string): Promise<string> =>
    run(["cat", path], 10_000).then(({ stdout }) => stdout, () => "");
  const cpuinfo = await read("/proc/cpuinfo");
  const meminfo = await read("/proc/meminfo");
  const loadavg = await read("/proc/loadavg");
  const kernel = (await read("/proc/sys/kernel/osrelease")).trim() || "unknown";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const memKib = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  return [
    `- CPU: ${model}, ${navigator.hardwareConcurrency} cores`,
    `- Memory: ${(memKib / 1024 / 1024).toFixed(1)} GiB`,
    `- Kernel: Linux ${kernel}`,
    `- Load average when the run started: ${loadavg.trim().split(" ").slice(0, 3).join(" ")}`,
  ];
}

async function versions(): Promise<string[]> {
  const denoJson = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  return [
    `- mtlb ${denoJson.version} on Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    `- ${await version(["haproxy", "-v"])}`,
    `- ${await version(["redis-server", "--version"])}`,
    `- ${await version(["redis-benchmark", "--version"])}`,
    `- ${await version(["openssl", "version"])}`,
    `- ${await version(["socat", "-V"], 1)}`,
  ];
}

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        rounds: { type: "string" },
        quick: { type: "boolean", default: false },
        "mtlb-workers": { type: "string", default: "2" },
        out: { type: "string" },
        install: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, { cause: error });
  }
  const { values } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const sizes = values.quick ? QUICK : FULL;
  const rounds = Number(values.rounds ?? (values.quick ? 1 : 3));
  const workers = Number(values["mtlb-workers"]);
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new UsageError(`--rounds must be a positive integer, received ${values.rounds}`);
  }
  if (!Number.isInteger(workers) || workers < 1 || workers > 1024) {
    throw new UsageError(
      `--mtlb-workers must be an integer from 1 to 1024, received ${values["mtlb-workers"]}`,
    );
  }
  const out = values.out ?? (values.quick ? undefined : join(HERE, "RESULTS.md"));
  const command = ["deno task bench", ...args].join(" ");
  const started = new Date();

  await checkTools(values.install);
  await checkOpenFiles(sizes);
  clockTicks = Number((await run(["getconf", "CLK_TCK"], 10_000)).stdout.trim()) || 100;
  const machineLines = await machine();
  const versionLines = await versions();

  tempDir = await Deno.makeTempDir({ prefix: "mtlb-bench-" });
  log(`Generating a PKI in ${tempDir}`);
  const pki = await generatePki(join(tempDir, "pki"));
  log("Starting redis-server x2 and the sink");
  const upstreams = await startUpstreams();
  log("Starting mtlb, HAProxy and the Deno floor");
  const mtlb = await startMtlb(tempDir, pki, upstreams, 1, "mtlb");
  const haproxy = await startHaproxy(tempDir, pki, upstreams, 1, "HAProxy");
  const floor = await startFloor(pki, upstreams, FLOOR);
  const single = [mtlb, haproxy, floor];

  let multi: Target[] = [];
  let multiNote = "";
  const mtlbMulti = `mtlb workers=${workers}`;
  const haproxyMulti = `HAProxy nbthread=${workers}`;
  if (workers > 1) {
    const mtlbN = await startMtlb(tempDir, pki, upstreams, workers, mtlbMulti);
    const haproxyN = await startHaproxy(tempDir, pki, upstreams, workers, haproxyMulti);
    const info = await inspect(mtlbN.proc.child.pid);
    const seen = info.children + info.workerThreads;
    if (seen === 0) {
      multiNote = `mtlb with \`workers = ${workers}\` ran no Worker thread or child process: ` +
        "`[server] workers` is not implemented yet, so its figures are n/a; HAProxy's are measured for reference.";
      log(multiNote);
      await mtlbN.proc.stop();
      multi = [haproxyN];
    } else {
      multiNote =
        `mtlb with \`workers = ${workers}\` ran ${seen} Worker threads or child processes.`;
      multi = [mtlbN, haproxyN];
    }
  }

  const samples = new Samples();
  const all = [...single, ...multi];
  log(`Warming up (${sizes.warmupRequests} requests through each balancer)`);
  for (const target of all) await requestRate(pki, target.redisPort, sizes.warmupRequests, true);

  for (let round = 0; round < rounds; round++) {
    // Rotate which balancer goes first, so none always runs on a cooler machine.
    const order = [...single.slice(round % 3), ...single.slice(0, round % 3)];
    const orderMulti = round % 2 === 0 ? multi : [...multi].reverse();
    const r = `round ${round + 1}/${rounds}`;

    const direct = await requestRate(pki, upstreams.redis[0], sizes.requests, false);
    samples.add("set", "direct", direct.set);
    samples.add("get", "direct", direct.get);
    for (const target of [...order, ...orderMulti]) {
      const [rate, cpuMs] = await withCpu(
        target.proc.child.pid,
        () => requestRate(pki, target.redisPort, sizes.requests, true),
      );
      samples.add("set", target.label, rate.set);
      samples.add("get", target.label, rate.get);
      // redis-benchmark sends `requests` SETs, then as many GETs.
      samples.add("cpu_requests", target.label, cpuMs / (2 * sizes.requests / 1000));
      log(`${r}: ${target.label}: ${format(rate.set, 0)} SET/s, ${format(rate.get, 0)} GET/s`);
    }
    // The same requests in plain TCP: what the runtime costs without TLS.
    for (const target of order) {
      if (target.tcpPort === undefined) continue;
      const [, cpuMs] = await withCpu(
        target.proc.child.pid,
        () => requestRate(pki, target.tcpPort!, sizes.requests, false),
      );
      samples.add("cpu_requests_tcp", target.label, cpuMs / (2 * sizes.requests / 1000));
    }
    for (const target of order) {
      const mbs = await bulkThroughput(pki, target, upstreams, sizes.bulkBytes);
      samples.add("bulk", target.label, mbs);
      log(`${r}: ${target.label}: bulk ${format(mbs, 1)} MB/s`);
    }
    for (const target of order) {
      const [rate, cpuMs] = await withCpu(
        target.proc.child.pid,
        () => handshakeRate(pki, target, sizes),
      );
      samples.add("handshakes", target.label, rate.perSecond);
      samples.add("cpu_handshake", target.label, cpuMs / rate.count);
      log(`${r}: ${target.label}: ${format(rate.perSecond, 0)} handshakes/s`);
    }
    for (const target of order) {
      const fresh = await startFresh(tempDir, pki, upstreams, target);
      let kib: number;
      try {
        kib = await memoryPerConnection(pki, fresh, upstreams, sizes.idleConnections);
      } finally {
        await fresh.proc.stop();
      }
      samples.add("memory", target.label, kib);
      log(`${r}: ${target.label}: ${format(kib, 1)} KiB per idle connection`);
    }
    // One client takes turns among direct and every balancer, one round trip each.
    const [base, ...via] = await pingLatency(
      pki,
      upstreams.redis[0],
      order.map((target) => target.redisPort),
      sizes.roundTrips,
    );
    samples.add("p50", "direct", base!.p50);
    samples.add("p99", "direct", base!.p99);
    for (const [i, target] of order.entries()) {
      const added = { p50: via[i]!.p50 - base!.p50, p99: via[i]!.p99 - base!.p99 };
      samples.add("p50", target.label, added.p50);
      samples.add("p99", target.label, added.p99);
      log(
        `${r}: ${target.label}: added latency p50 ${format(added.p50, 0)} us, p99 ${
          format(added.p99, 0)
        } us`,
      );
    }
  }

  // The single-threaded targets every figure but the multi-core one compares.
  const SINGLE = { mtlb: "mtlb", haproxy: "HAProxy", floor: FLOOR } as const;
  const rows: Row[] = [
    {
      metric: "set",
      label: `Request rate, SET (${REDIS_CLIENTS} connections)`,
      unit: "req/s",
      higherIsBetter: true,
      digits: 0,
      bar: 1,
      ...SINGLE,
      direct: ["set", "direct"],
    },
    {
      metric: "get",
      label: `Request rate, GET (${REDIS_CLIENTS} connections)`,
      unit: "req/s",
      higherIsBetter: true,
      digits: 0,
      bar: 1,
      ...SINGLE,
      direct: ["get", "direct"],
    },
    {
      metric: "bulk",
      label: `Bulk throughput (${sizes.bulkBytes / 1024 / 1024} MiB, one connection)`,
      unit: "MB/s",
      higherIsBetter: true,
      digits: 1,
      bar: 0.8,
      ...SINGLE,
    },
    {
      metric: "handshakes",
      label: `Handshake rate (${sizes.handshakeClients} clients)`,
      unit: "/s",
      higherIsBetter: true,
      digits: 0,
      bar: 1,
      ...SINGLE,
    },
    {
      metric: "memory",
      label: `Memory per idle connection (${sizes.idleConnections} held)`,
      unit: "KiB",
      higherIsBetter: false,
      digits: 1,
      bar: 1,
      ...SINGLE,
    },
    {
      metric: "cpu_requests",
      label: "CPU per 1,000 requests (SET and GET runs)",
      unit: "ms",
      higherIsBetter: false,
      digits: 1,
      ...SINGLE,
    },
    {
      metric: "cpu_requests_tcp",
      label: "CPU per 1,000 requests, plain TCP (no TLS; mtlb n/a)",
      unit: "ms",
      higherIsBetter: false,
      digits: 1,
      ...SINGLE,
    },
    {
      metric: "cpu_handshake",
      label: "CPU per handshake",
      unit: "ms",
      higherIsBetter: false,
      digits: 3,
      ...SINGLE,
    },
    {
      metric: "p50",
      label: "Added latency p50 (PING round trip)",
      unit: "us",
      higherIsBetter: false,
      digits: 0,
      ...SINGLE,
      direct: ["p50", "direct"],
    },
    {
      metric: "p99",
      label: "Added latency p99 (PING round trip)",
      unit: "us",
      higherIsBetter: false,
      digits: 0,
      ...SINGLE,
      direct: ["p99", "direct"],
    },
  ];
  if (workers > 1) {
    for (const [metric, name] of [["set", "SET"], ["get", "GET"]] as const) {
      rows.push({
        metric,
        label: `Request rate, ${name}, ${workers} workers vs nbthread ${workers}`,
        unit: "req/s",
        higherIsBetter: true,
        digits: 0,
        bar: 1,
        mtlb: mtlbMulti,
        haproxy: haproxyMulti,
      });
    }
  }

  const summary = table(rows, samples);
  const medianOf = rounds === 1 ? "one round" : `medians of ${rounds} rounds`;
  console.log(`\n${values.quick ? "Smoke run (--quick), " : ""}${medianOf}:\n\n${summary}\n`);
  if (multiNote) console.log(`${multiNote}\n`);
  for (const target of all) {
    if (target.proc.stderrTail) {
      log(`${target.label} wrote to standard error (last lines):\n${target.proc.stderrTail}\n`);
    }
  }

  if (out === undefined) {
    log("No results file written: --quick is a smoke run (give --out FILE to keep it)");
    return 0;
  }
  const report = `# mtlb against HAProxy: benchmark results

${
    values.quick
      ? "**Smoke run (`--quick`): small sizes and one round; not a measurement.**\n\n"
      : ""
  }Recorded ${started.toISOString()} by \`${command}\` (${medianOf}; see
[README.md](README.md) for what each figure means and how it is measured).

## Machine

${machineLines.join("\n")}

## Versions

${versionLines.join("\n")}

## Results (${medianOf})

Ratios are mtlb/HAProxy of the medians; "bar" is the goal from issue 6. Latency is added
to a plaintext round trip straight to Redis, whose own p50/p99 is in the last column.
The CPU rows are the balancer process's own user + system time over the run, whatever
the clients use: the cost of the work, steadier than rates on a shared 2-core machine.

"Deno floor" is [\`_floor.ts\`](_floor.ts): a \`node:tls\` server (TLS 1.3, client
certificate verified) piped to \`node:net\` upstreams, with none of mtlb (no identity,
policy, limits, health checks, metrics, logs or timeouts). It is what the Deno runtime
costs by itself on the only API that verifies client certificates; mtlb cannot go below it
without a different TLS stack. The plain TCP row runs the same requests without TLS through a
plain \`node:net\` listener of the floor and a plain \`bind\` of HAProxy: the runtime's socket
path alone (mtlb only speaks mutual TLS, so it has no figure there).

${summary}
${multiNote ? `\n${multiNote}\n` : ""}
## Configurations

The generated configurations of the single-threaded pair (ports and paths vary per run).

<details><summary>mtlb</summary>

\`\`\`toml
${mtlb.config.replaceAll(tempDir, "$TMP").trim()}
\`\`\`

</details>

<details><summary>HAProxy</summary>

\`\`\`
${haproxy.config.replaceAll(tempDir, "$TMP").trim()}
\`\`\`

</details>

## Per round

${perRoundTable(rows, samples, rounds)}

Under the latency figures, "direct" is the plaintext round trip itself, not an added latency.
`;
  await Deno.writeTextFile(out, report);
  // Formatted as `deno fmt --check` (in `deno task ok`) expects the committed file.
  await run([Deno.execPath(), "fmt", "--quiet", out], 60_000).catch((error) =>
    log(`Could not format ${out}: ${error.message}`)
  );
  log(`Wrote ${out}`);
  return 0;
}

if (import.meta.main) {
  let interrupted = false;
  const onSignal = (signal: Deno.Signal) => () => {
    if (interrupted) return;
    interrupted = true;
    log(`\nStopping on ${signal}`);
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal("SIGINT"));
  Deno.addSignalListener("SIGTERM", onSignal("SIGTERM"));
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (error) {
    if (interrupted) {
      // The measurement failed because its processes were stopped: not worth a message.
      code = 130;
    } else if (error instanceof UsageError) {
      log(`Cannot benchmark: ${error.message}\n\n${USAGE}`);
      code = 2;
    } else if (error instanceof BenchError) {
      log(`Cannot benchmark: ${error.message}`);
      code = 1;
    } else {
      throw error;
    }
  } finally {
    await cleanup();
  }
  Deno.exit(code);
}
