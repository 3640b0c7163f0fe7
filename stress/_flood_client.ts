/**
 * A flood of silent TCP connections, for the memory suite (`memory_flood.ts`):
 * waits for `go` on stdin, then opens `--count` connections to the balancer as fast
 * as it can (all connects at once) and sends nothing on any of them, as a scanner or
 * a slowloris client does. It holds each until the balancer closes it, or until
 * `--hold-ms` after the first connect, and then closes what is left.
 *
 * Reports on stdout, one JSON line each: `ready`; `opened` (connections made,
 * connect errors by kind, milliseconds to open them all); `done` (how many the
 * balancer closed, by FIN or reset, and how long each had been open: percentiles and
 * a histogram by second; how many were still open at `--hold-ms`).
 *
 * Run it with the open-files limit raised (`ulimit -n`): one descriptor per connection.
 *
 * Usage: `deno run --allow-net=127.0.0.1 stress/_flood_client.ts --port=P
 * [--count=5000] [--hold-ms=10000]`
 *
 * @module
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string" },
    count: { type: "string", default: "5000" },
    "hold-ms": { type: "string", default: "10000" },
  },
});
const PORT = Number(values.port);
const COUNT = Number(values.count);
const HOLD_MS = Number(values["hold-ms"]);

const report = (event: string, extra: Record<string, unknown>): void =>
  console.log(JSON.stringify({ event, at: Date.now(), ...extra }));

function kindOf(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: string }).code;
    return code !== undefined && code !== "" ? `${error.name}:${code}` : error.name;
  }
  return String(error);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!);
}

const stdin = Deno.stdin.readable.getReader();
report("ready", {});
await stdin.read(); // go

const started = performance.now();
const connectErrors: Record<string, number> = {};
/** Milliseconds from the connect to the balancer's close, by how it closed. */
const lifetimes: { ms: number; how: "fin" | "reset" }[] = [];
const open = new Set<Deno.Conn>();
const holding: Promise<void>[] = [];

async function hold(conn: Deno.Conn, connectedAt: number): Promise<void> {
  const buffer = new Uint8Array(1024);
  let how: "fin" | "reset" = "fin";
  try {
    while (await conn.read(buffer) !== null) {
      /* the balancer sends nothing before a ClientHello */
    }
  } catch {
    if (!open.has(conn)) return; // closed by us at HOLD_MS
    how = "reset";
  }
  if (!open.delete(conn)) return;
  lifetimes.push({ ms: performance.now() - connectedAt, how });
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

await Promise.all(Array.from({ length: COUNT }, async () => {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: PORT });
    open.add(conn);
    holding.push(hold(conn, performance.now()));
  } catch (error) {
    const kind = kindOf(error);
    connectErrors[kind] = (connectErrors[kind] ?? 0) + 1;
  }
}));
const openMs = Math.round(performance.now() - started);
report("opened", { connected: holding.length, connectErrors, openMs });

const left = HOLD_MS - (performance.now() - started);
let timer: ReturnType<typeof setTimeout> | undefined;
await Promise.race([
  Promise.all(holding),
  new Promise((resolve) => timer = setTimeout(resolve, Math.max(0, left))),
]);
clearTimeout(timer);
const stillOpen = open.size;
for (const conn of [...open]) {
  open.delete(conn);
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
await Promise.all(holding);

const sorted = lifetimes.map((l) => l.ms).toSorted((a, b) => a - b);
const bySecond: Record<string, number> = {};
for (const ms of sorted) {
  const second = `${Math.floor(ms / 1000)}s`;
  bySecond[second] = (bySecond[second] ?? 0) + 1;
}
report("done", {
  closedByBalancer: lifetimes.length,
  fin: lifetimes.filter((l) => l.how === "fin").length,
  reset: lifetimes.filter((l) => l.how === "reset").length,
  stillOpen,
  lifetimeMs: {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: Math.round(sorted.at(-1) ?? 0),
  },
  bySecond,
  elapsedMs: Math.round(performance.now() - started),
});
Deno.exit(0);
