/**
 * What the stress suites share: a development PKI, the echo upstream and the
 * balancer (`main.ts`, as a process with the narrow permissions and the file
 * descriptor limit raised), client processes, and samples of the balancer's file
 * descriptors and memory. Processes, their output lines and /proc are read with the
 * helpers of `testing/`.
 *
 * @module
 */
import { join } from "node:path";
import { writeDevPki } from "../lib/pki/dev_pki.ts";
import { guard } from "../testing/guard.ts";
import { ROOT } from "../testing/paths.ts";
import { sampleProcess } from "../testing/process_sample.ts";
import { Subprocess, type SubprocessOptions } from "../testing/subprocess.ts";
import { mainPermissions } from "../testing/run_main.ts";

/** The running `deno`, for the suites' helper processes. */
export const DENO: string = Deno.execPath();

/** A process sample from /proc: open file descriptors and memory. */
export interface ProcSample {
  fds: number;
  rssMiB: number;
  peakRssMiB: number;
  threads: number;
}

/** Reads /proc/PID: open descriptors, resident and peak resident memory, threads. */
export async function sample(pid: number): Promise<ProcSample> {
  const { fds, rssKib, hwmKib, threads } = await sampleProcess(pid);
  return {
    fds,
    rssMiB: Math.round(rssKib / 102.4) / 10,
    peakRssMiB: Math.round(hwmKib / 102.4) / 10,
    threads,
  };
}

/** A series of a Prometheus text exposition, summed over its labels (those matching `labels`). */
export function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    const series = line.slice(0, at);
    if (series !== name && !series.startsWith(`${name}{`)) continue;
    if (labels !== "" && !series.includes(labels)) continue;
    sum += Number(line.slice(at + 1));
  }
  return sum;
}

/** The PKI files of a stress run. */
export interface Pki {
  ca: string;
  cert: string;
  key: string;
  clients: { name: string; cert: string; key: string }[];
}

/** Writes a development PKI with `clients` client certificates (`c0`, `c1`, ...). */
export async function makePki(dir: string, clients: number): Promise<Pki> {
  const names = Array.from({ length: clients }, (_, i) => `c${i}`);
  const pki = await writeDevPki(join(dir, "certs"), { clients: names });
  return {
    ca: pki.caCert,
    cert: pki.serverCert,
    key: pki.serverKey,
    clients: pki.clients.map((c) => ({ name: c.name, cert: c.cert, key: c.key })),
  };
}

/**
 * Starts a helper process of a suite in the repository root, with its descriptor limit
 * raised to the hard limit and its standard input piped (the helpers exit when it
 * closes, which is how disposing of one stops it). Its output lines may take minutes.
 */
export function spawn(cmd: string[], options: SubprocessOptions = {}): Subprocess {
  return new Subprocess(cmd, {
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    openFiles: "hard",
    stdin: "piped",
    guardMs: 600_000,
    stop: { signal: null, graceMs: 10_000 },
    ...options,
  });
}

/** Starts the echo upstream process; resolves with it and its address. */
export async function startUpstream(): Promise<{ child: Subprocess; address: string }> {
  const child = spawn([DENO, "run", "--allow-net=127.0.0.1", "stress/_echo_upstream.ts"]);
  const port = await child.line(30_000);
  return { child, address: `127.0.0.1:${port}` };
}

/**
 * Starts an echo upstream that listens with a small accept queue (and, with `quit`,
 * closes a connection after answering `QUIT`, as Redis does): `_backlog_upstream.ts`.
 */
export async function startBacklogUpstream(
  options: { backlog: number; quit?: boolean; stallMs?: number; stallEvery?: number },
): Promise<{ child: Subprocess; address: string }> {
  const child = spawn([
    DENO,
    "run",
    "--allow-net=127.0.0.1",
    "stress/_backlog_upstream.ts",
    `--backlog=${options.backlog}`,
    ...(options.quit ? ["--quit"] : []),
    ...(options.stallMs
      ? [`--stall-ms=${options.stallMs}`, `--stall-every=${options.stallEvery}`]
      : []),
  ]);
  const port = await child.line(30_000);
  return { child, address: `127.0.0.1:${port}` };
}

/** What the balancer has logged so far (JSON lines on stderr). */
export interface LogCounts {
  /** `mtlb.audit` records: forwarded connections that ended, by end reason. */
  ended: Record<string, number>;
  /** Refusals after the handshake, by reason. */
  denied: Record<string, number>;
  /** Failed handshakes, by reason. */
  handshakeFailed: Record<string, number>;
  /** Records at level ERROR or FATAL. */
  errors: string[];
  /** Records at level WARNING (first few). */
  warnings: string[];
}

/** Live status as `GET /status` of the admin endpoint reports it. */
export interface AdminStatus {
  connections: { open: number; active: number; accepted: number };
  clients: { name: string; active: number }[];
}

/**
 * The balancer as a process: `main.ts serve` with the permissions `main.ts
 * permissions` prints for the config, and the descriptor limit raised to the hard limit.
 */
export class BalancerProcess implements AsyncDisposable {
  readonly child: Subprocess;
  readonly logs: LogCounts = {
    ended: {},
    denied: {},
    handshakeFailed: {},
    errors: [],
    warnings: [],
  };
  port = 0;
  admin: string | undefined;
  #pump: Promise<void> | undefined;

  private constructor(child: Subprocess) {
    this.child = child;
  }

  /**
   * Starts `main.ts serve` on `config` (which must listen on 127.0.0.1:0 and may
   * have `[admin] listen = "127.0.0.1:0"`) and resolves once it listens. `v8Flags`
   * go to `deno run --v8-flags=` (say `--max-old-space-size=256`).
   */
  static async start(
    dir: string,
    config: string,
    options: { v8Flags?: string } = {},
  ): Promise<BalancerProcess> {
    const path = join(dir, "lb.toml");
    await Deno.writeTextFile(path, config);
    // Exactly the permissions the balancer asks for: `main.ts permissions`.
    const permissions = await mainPermissions(path);
    const child = spawn([
      DENO,
      "run",
      ...permissions,
      ...(options.v8Flags ? [`--v8-flags=${options.v8Flags}`] : []),
      "main.ts",
      "serve",
      "--config",
      path,
      "--log-format",
      "json",
    ], { name: "balancer", stdin: "null", stdout: "null", stderr: "lines" });
    const balancer = new BalancerProcess(child);
    const started = Promise.withResolvers<void>();
    balancer.#pump = balancer.#read(started);
    await guard(started.promise, "balancer start", 30_000);
    return balancer;
  }

  get pid(): number {
    return this.child.pid;
  }

  async #read(started: PromiseWithResolvers<void>): Promise<void> {
    const count = (map: Record<string, number>, key: string) => map[key] = (map[key] ?? 0) + 1;
    for await (const line of this.child.stderr) {
      let record: {
        level?: string;
        logger?: string;
        message?: string;
        properties?: Record<string, unknown>;
      };
      try {
        record = JSON.parse(line);
      } catch {
        this.logs.errors.push(line);
        continue;
      }
      const { level, logger, message = "", properties = {} } = record;
      if (logger === "mtlb.audit") count(this.logs.ended, String(properties.reason));
      else if (message.startsWith("Denied")) count(this.logs.denied, String(properties.reason));
      else if (message.startsWith("Handshake failed")) {
        count(this.logs.handshakeFailed, String(properties.reason));
      } else if (logger === "mtlb.main" && message.includes("started")) {
        const addresses = properties.addresses as string[];
        this.port = Number(addresses[0]!.split(":").at(-1));
        this.admin = properties.admin as string | undefined;
        started.resolve();
      }
      if (level === "ERROR" || level === "FATAL") this.logs.errors.push(message);
      if (level === "WARNING" && this.logs.warnings.length < 20) this.logs.warnings.push(message);
    }
    started.reject(new Error(`The balancer exited: ${this.logs.errors.join("\n")}`));
  }

  /** `GET /status`, or undefined without an admin endpoint. */
  async status(): Promise<AdminStatus | undefined> {
    if (this.admin === undefined) return undefined;
    const response = await fetch(`http://${this.admin}/status`);
    return await response.json() as AdminStatus;
  }

  /** `GET /metrics` (Prometheus text), or "" without an admin endpoint. */
  async metrics(): Promise<string> {
    if (this.admin === undefined) return "";
    return await (await fetch(`http://${this.admin}/metrics`)).text();
  }

  /** Open descriptors and memory of the balancer process. */
  sample(): Promise<ProcSample> {
    return sample(this.pid);
  }

  /** Sends SIGTERM and waits for the exit code (SIGKILL after a minute). */
  async stop(): Promise<number> {
    const { code } = await this.child.stop({ signal: "SIGTERM", graceMs: 60_000 });
    await this.#pump;
    return code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.child.stop({ signal: "SIGKILL" });
    await this.#pump;
  }
}

/**
 * The config of a stress run: one group of `upstream` (one or several), `clients`
 * clients each capped at `cap`; `extra` goes in `[server]`, `group` in the group.
 */
export function stressConfig(
  pki: Pki,
  upstream: string | string[],
  options: { cap: number; extra?: string; group?: string },
): string {
  return `[server]
listen = "127.0.0.1:0"
${options.extra ?? ""}

[tls]
ca = ${JSON.stringify(pki.ca)}
cert = ${JSON.stringify(pki.cert)}
key = ${JSON.stringify(pki.key)}

[admin]
listen = "127.0.0.1:0"

[groups.echo]
upstreams = ${JSON.stringify(typeof upstream === "string" ? [upstream] : upstream)}
${options.group ?? ""}

${
    pki.clients.map((c) =>
      `[clients.${c.name}]
match = { cn = "${c.name}" }
groups = ["echo"]
max_connections = ${options.cap}
`
    ).join("\n")
  }`;
}

/** Starts one client process per PKI client, in `mode`, with extra flags. */
export function startClients(
  pki: Pki,
  port: number,
  mode: "hold" | "burst" | "churn" | "quit",
  flags: Record<string, number>,
): Subprocess[] {
  return pki.clients.map((client, i) =>
    spawn([
      DENO,
      "run",
      "--allow-net=127.0.0.1",
      `--allow-read=${pki.ca},${client.cert},${client.key}`,
      "stress/_client.ts",
      mode,
      `--port=${port}`,
      `--ca=${pki.ca}`,
      `--cert=${client.cert}`,
      `--key=${client.key}`,
      `--seed=${i + 1}`,
      ...Object.entries(flags).map(([name, value]) => `--${name}=${value}`),
    ])
  );
}

/** A client report line. */
export interface ClientReport {
  event: string;
  ok: number;
  errors: Record<string, number>;
  bytesSent: number;
  bytesVerified: number;
  handshakes: number;
  handshakeMs: { p50: number; p99: number; max: number };
  open?: number;
  elapsedMs?: number;
  bytesThisRound?: number;
  /** `quit` mode: how the writes after `QUIT` ended, by error kind. */
  ends?: Record<string, number>;
}

/** Sums the reports of several clients. */
export function total(reports: ClientReport[]): ClientReport {
  const errors: Record<string, number> = {};
  for (const r of reports) {
    for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  }
  return {
    event: reports[0]?.event ?? "",
    ok: reports.reduce((n, r) => n + r.ok, 0),
    errors,
    bytesSent: reports.reduce((n, r) => n + r.bytesSent, 0),
    bytesVerified: reports.reduce((n, r) => n + r.bytesVerified, 0),
    handshakes: reports.reduce((n, r) => n + r.handshakes, 0),
    handshakeMs: {
      p50: Math.max(...reports.map((r) => r.handshakeMs.p50)),
      p99: Math.max(...reports.map((r) => r.handshakeMs.p99)),
      max: Math.max(...reports.map((r) => r.handshakeMs.max)),
    },
    open: reports.reduce((n, r) => n + (r.open ?? 0), 0),
    elapsedMs: Math.max(...reports.map((r) => r.elapsedMs ?? 0)),
    bytesThisRound: reports.reduce((n, r) => n + (r.bytesThisRound ?? 0), 0),
  };
}

export const errorCount = (errors: Record<string, number>): number =>
  Object.values(errors).reduce((a, b) => a + b, 0);

/** A short description of the machine and its load, for the record. */
export function conditions(): string {
  const [load1, load5] = Deno.loadavg();
  const cpus = navigator.hardwareConcurrency;
  const mem = Deno.systemMemoryInfo();
  return `${Deno.build.os} ${Deno.osRelease()}, ${cpus} CPUs, ${
    Math.round(mem.total / 1024 / 1024 / 1024)
  } GiB RAM, load average ${load1?.toFixed(2)} / ${
    load5?.toFixed(2)
  } at start, Deno ${Deno.version.deno}`;
}

/** A suite's checks: each printed as it is made, the failed ones kept for the summary. */
export class Checks {
  /** What failed, in order; also errors that ended the suite early. */
  readonly failures: string[] = [];

  /**
   * Records one check.
   *
   * @param ok Whether it held.
   * @param what What was checked, as printed.
   */
  check = (ok: boolean, what: string): void => {
    if (!ok) this.failures.push(what);
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  };
}

/**
 * Runs a suite in a fresh temporary directory, removed afterwards. An error thrown by
 * `body` counts as a failure. Prints PASS or FAIL and exits 0 only when nothing failed.
 *
 * @param prefix Prefix of the temporary directory.
 * @param checks The suite's checks.
 * @param body The suite.
 */
export async function runSuite(
  prefix: string,
  checks: Checks,
  body: (dir: string) => Promise<void>,
): Promise<never> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await body(dir);
  } catch (error) {
    checks.failures.push(String(error));
    console.error(error);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const failed = checks.failures.length;
  console.log(failed === 0 ? "PASS" : `FAIL: ${failed} checks failed`);
  Deno.exit(failed === 0 ? 0 : 1);
}
