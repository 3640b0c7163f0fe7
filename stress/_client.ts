/**
 * A stress client process: many mTLS connections to the balancer with Deno's native
 * TLS, each sending a deterministic pattern and checking that the echo comes back
 * byte for byte. The orchestrator (`load_5000.ts`, `soak.ts`) starts several, sends
 * commands on stdin (one per line) and reads one JSON report per line on stdout.
 *
 * Modes (first argument), the rest as `--name=value`:
 * - `hold`: opens `count` connections (`ramp` at a time), one echo each; reports
 *   `held`. Then `exchange` runs one more echo on every open connection at once
 *   (reports `exchanged`) and `close` closes them all (reports `closed`, exits).
 * - `burst`: waits for `go`, then opens `count` connections all at once, one echo
 *   each, closes them; reports `done` and exits.
 * - `churn`: waits for `go`, then runs `concurrency` loops of connect, echo, close for
 *   `duration` ms; reports `done` and exits.
 * - `pace`: waits for `go`, then starts one connection (connect, echo, close) every
 *   `interval` ms, whether or not the previous one has finished, until `stop`; reports
 *   `done` with every attempt: when it started (epoch ms), how long its handshake and
 *   the whole attempt took, and the error kind of a failed one.
 * - `quit`: waits for `go`, then runs `concurrency` loops for `duration` ms of:
 *   connect, write `QUIT`, then keep writing `PING` every 2 ms, reading whatever comes,
 *   until the connection is closed under it (the upstream closed after `QUIT`, and its
 *   kernel resets what followed). Reports `done` with `ends`: how the writes ended.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-read=DIR stress/_client.ts MODE
 * --port=P --ca=FILE --cert=FILE --key=FILE [--count=N] [--bytes=N] [--ramp=N]
 * [--concurrency=N] [--duration=MS] [--interval=MS] [--seed=N]`
 *
 * @module
 */

type Mode = "hold" | "burst" | "churn" | "pace" | "quit";
const mode = Deno.args[0] as Mode;
const flags = new Map(
  Deno.args.slice(1).map((arg) => {
    const [name, ...value] = arg.replace(/^--/, "").split("=");
    return [name!, value.join("=")];
  }),
);
const flag = (name: string, fallback?: string): string => {
  const value = flags.get(name) ?? fallback;
  if (value === undefined) throw new TypeError(`Missing --${name}`);
  return value;
};
const PORT = Number(flag("port"));
const CA = Deno.readTextFileSync(flag("ca"));
const CERT = Deno.readTextFileSync(flag("cert"));
const KEY = Deno.readTextFileSync(flag("key"));
const COUNT = Number(flag("count", "1"));
const BYTES = Number(flag("bytes", "4096"));
const RAMP = Number(flag("ramp", "64"));
const CONCURRENCY = Number(flag("concurrency", "8"));
const DURATION = Number(flag("duration", "60000"));
const SEED = Number(flag("seed", "1"));
const INTERVAL = Number(flag("interval", "100"));
/** Any single operation (handshake, echo, close) slower than this is an error. */
const OP_TIMEOUT_MS = 60_000;

/** Counters reported to the orchestrator. */
const stats = {
  ok: 0,
  errors: {} as Record<string, number>,
  bytesSent: 0,
  bytesVerified: 0,
  handshakeMs: [] as number[],
};

function fail(kind: string): void {
  stats.errors[kind] = (stats.errors[kind] ?? 0) + 1;
}

function kindOf(error: unknown): string {
  if (error instanceof StressError) return error.kind;
  if (error instanceof Error) {
    const code = (error as { code?: string }).code;
    return code !== undefined && code !== "" ? `${error.name}:${code}` : error.name;
  }
  return String(error);
}

class StressError extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
    this.name = "StressError";
  }
}

/** Deterministic bytes for connection `id`, round `round`. */
function pattern(id: number, round: number): Uint8Array {
  const out = new Uint8Array(BYTES);
  let x = (SEED * 2654435761 + id * 40503 + round * 97 + 1) >>> 0;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new StressError("Timeout", `${what} took over ${OP_TIMEOUT_MS} ms`)),
          OP_TIMEOUT_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function connect(): Promise<Deno.TlsConn> {
  const started = performance.now();
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: PORT,
    caCerts: [CA],
    cert: CERT,
    key: KEY,
  });
  try {
    await withTimeout(conn.handshake(), "handshake");
  } catch (error) {
    conn.close();
    throw error;
  }
  stats.handshakeMs.push(performance.now() - started);
  return conn;
}

/** Writes the pattern and reads it back; throws on any difference. */
async function echo(conn: Deno.TlsConn, id: number, round: number): Promise<void> {
  const sent = pattern(id, round);
  const received = new Uint8Array(sent.length);
  const reading = (async () => {
    let have = 0;
    while (have < received.length) {
      const n = await conn.read(received.subarray(have));
      if (n === null) {
        throw new StressError("ShortRead", `EOF after ${have} of ${received.length} bytes`);
      }
      have += n;
    }
  })();
  const writing = (async () => {
    for (let at = 0; at < sent.length;) at += await conn.write(sent.subarray(at));
    stats.bytesSent += sent.length;
  })();
  await withTimeout(Promise.all([reading, writing]), "echo");
  for (let i = 0; i < sent.length; i++) {
    if (sent[i] !== received[i]) throw new StressError("Mismatch", `byte ${i} differs`);
  }
  stats.bytesVerified += sent.length;
}

/** Sends FIN and waits for the echo server's FIN to come back through the balancer. */
async function close(conn: Deno.TlsConn): Promise<void> {
  try {
    await conn.closeWrite();
    const rest = new Uint8Array(1024);
    const n = await withTimeout(conn.read(rest), "close");
    if (n !== null) throw new StressError("Unexpected", `${n} bytes after the echo`);
  } finally {
    conn.close();
  }
}

/** One whole connection: connect, echo, close. */
async function once(id: number): Promise<void> {
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await connect();
    await echo(conn, id, 0);
    const closing = conn;
    conn = undefined;
    await close(closing);
    stats.ok++;
  } catch (error) {
    fail(kindOf(error));
    try {
      conn?.close();
    } catch {
      // Already closed.
    }
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function report(event: string, extra: Record<string, unknown> = {}): void {
  const sorted = stats.handshakeMs.toSorted((a, b) => a - b);
  console.log(JSON.stringify({
    event,
    ok: stats.ok,
    errors: stats.errors,
    bytesSent: stats.bytesSent,
    bytesVerified: stats.bytesVerified,
    handshakes: sorted.length,
    handshakeMs: {
      p50: Math.round(percentile(sorted, 0.5)),
      p99: Math.round(percentile(sorted, 0.99)),
      max: Math.round(sorted.at(-1) ?? 0),
    },
    ...extra,
  }));
}

const commands = (async function* (): AsyncGenerator<string> {
  let buffer = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    for (let at = buffer.indexOf("\n"); at >= 0; at = buffer.indexOf("\n")) {
      yield buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 1);
    }
  }
})();

async function command(): Promise<string> {
  const next = await commands.next();
  return next.done ? "close" : next.value;
}

async function hold(): Promise<void> {
  const open = new Map<number, Deno.TlsConn>();
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(RAMP, COUNT) }, async () => {
    while (next < COUNT) {
      const id = next++;
      try {
        const conn = await connect();
        open.set(id, conn);
        await echo(conn, id, 0);
        stats.ok++;
      } catch (error) {
        fail(kindOf(error));
        open.get(id)?.close();
        open.delete(id);
      }
    }
  }));
  report("held", { open: open.size });
  for (;;) {
    const line = await command();
    if (line === "exchange") {
      const before = stats.bytesVerified;
      await Promise.all([...open].map(async ([id, conn]) => {
        try {
          await echo(conn, id, 1);
        } catch (error) {
          fail(kindOf(error));
        }
      }));
      report("exchanged", { open: open.size, bytesThisRound: stats.bytesVerified - before });
    } else if (line === "close") {
      await Promise.all(
        [...open.values()].map((conn) => close(conn).catch((e) => fail(kindOf(e)))),
      );
      report("closed", { open: 0 });
      return;
    }
  }
}

async function burst(): Promise<void> {
  report("ready");
  await command(); // go
  const started = performance.now();
  await Promise.all(Array.from({ length: COUNT }, (_, id) => once(id)));
  report("done", { elapsedMs: Math.round(performance.now() - started) });
}

async function churn(): Promise<void> {
  report("ready");
  await command(); // go
  const started = performance.now();
  let id = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() - started < DURATION) await once(id++);
  }));
  report("done", { elapsedMs: Math.round(performance.now() - started) });
}

/**
 * One attempt of `pace`: its start (epoch ms), time to the completed handshake and to
 * the end (connect, handshake, echo, close), and the error kind if it failed.
 */
interface Attempt {
  at: number;
  handshakeMs?: number;
  ms: number;
  error?: string;
}

async function attempt(id: number): Promise<Attempt> {
  const at = Date.now();
  const started = performance.now();
  let conn: Deno.TlsConn | undefined;
  let handshakeMs: number | undefined;
  try {
    conn = await connect();
    handshakeMs = Math.round(performance.now() - started);
    await echo(conn, id, 0);
    const closing = conn;
    conn = undefined;
    await close(closing);
    stats.ok++;
    return { at, handshakeMs, ms: Math.round(performance.now() - started) };
  } catch (error) {
    const kind = kindOf(error);
    fail(kind);
    try {
      conn?.close();
    } catch {
      // Already closed.
    }
    const ms = Math.round(performance.now() - started);
    return handshakeMs === undefined
      ? { at, ms, error: kind }
      : { at, handshakeMs, ms, error: kind };
  }
}

async function pace(): Promise<void> {
  report("ready");
  await command(); // go
  const attempts: Attempt[] = [];
  const running = new Set<Promise<void>>();
  let stopped = false;
  const stop = command().then(() => stopped = true);
  for (let id = 0; !stopped; id++) {
    const one: Promise<void> = attempt(id).then((a) => void attempts.push(a));
    running.add(one);
    void one.finally(() => running.delete(one));
    await Promise.race([stop, new Promise((resolve) => setTimeout(resolve, INTERVAL))]);
  }
  await Promise.all(running);
  report("done", { attempts: attempts.toSorted((a, b) => a.at - b.at) });
}

/** How the writes after `QUIT` ended, by error kind. */
const ends: Record<string, number> = {};

/** One connection that writes into a connection its upstream has closed. */
async function quitOnce(): Promise<void> {
  let conn: Deno.TlsConn;
  try {
    conn = await connect();
  } catch (error) {
    fail(kindOf(error));
    return;
  }
  const reading = (async () => {
    const buffer = new Uint8Array(1024);
    try {
      while (await conn.read(buffer) !== null) { /* +OK, then EOF */ }
    } catch {
      // The reset: the writes below see it too.
    }
  })();
  const ping = new TextEncoder().encode("PING\r\n");
  try {
    await conn.write(new TextEncoder().encode("QUIT\r\n"));
    const deadline = performance.now() + 10_000;
    for (;;) {
      if (performance.now() > deadline) {
        throw new StressError("StillOpen", "the connection stayed open 10 s after QUIT");
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
      await conn.write(ping);
    }
  } catch (error) {
    if (error instanceof StressError) fail(error.kind);
    else {
      const kind = kindOf(error);
      ends[kind] = (ends[kind] ?? 0) + 1;
      stats.ok++;
    }
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
    await reading;
  }
}

async function quit(): Promise<void> {
  report("ready");
  await command(); // go
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() - started < DURATION) await quitOnce();
  }));
  report("done", { elapsedMs: Math.round(performance.now() - started), ends });
}

if (mode === "hold") await hold();
else if (mode === "burst") await burst();
else if (mode === "churn") await churn();
else if (mode === "pace") await pace();
else if (mode === "quit") await quit();
else throw new TypeError(`Unknown mode ${JSON.stringify(mode)}: hold, burst, churn, pace or quit`);
Deno.exit(0);
