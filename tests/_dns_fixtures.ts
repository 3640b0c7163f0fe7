/**
 * What the end-to-end DNS tests share, with one balancer or with workers: the config
 * they start from, the `api` group's status, and `main.ts` serving that config.
 */
import type { GroupState, UpstreamState } from "../lib/server/status.ts";
import { connectClient, rawRequest, readBytes, text } from "./_harness.ts";
import type { TestCredential, TestPki } from "./_pki_fixtures.ts";
import { lines } from "../testing/lines.ts";
import { ROOT } from "../testing/paths.ts";

/** The SRV name the tests' upstreams are looked up under. */
export const SRV = "_api._tcp.test";
/** Re-resolution and probe state changes take a few intervals at most. */
export const WAIT_MS = 5_000;

/**
 * A config without `[tls]`: one group `api` with these upstreams, looked up through
 * `resolver`, and alice allowed to it; health probes are rare.
 */
export function body(resolver: string, upstreams: string): string {
  return `[server]
listen = "127.0.0.1:0"
resolver = "${resolver}"

[health]
interval = "1h"

[groups.api]
upstreams = ${upstreams}

[clients.alice]
match = { cn = "alice" }
groups = ["api"]
`;
}

/**
 * The config `main.ts` serves: {@linkcode body} with an SRV entry re-resolved every
 * 100 ms, listening on `port` with that many workers, an admin endpoint on `admin`,
 * and the test PKI's files.
 */
export function mainConfig(
  options: { resolver: string; srv: string; port: number; workers: number; admin: number },
  pki: TestPki,
): string {
  const { resolver, srv, port, workers, admin } = options;
  return `${
    body(resolver, `[{ srv = "${srv}", interval = "100ms" }]`)
      .replace('listen = "127.0.0.1:0"', `listen = "127.0.0.1:${port}"\nworkers = ${workers}`)
  }
[admin]
listen = "127.0.0.1:${admin}"

[tls]
ca = "${pki.ca.certPath}"
cert = "${pki.server.certPath}"
key = "${pki.server.keyPath}"
`;
}

/** The `api` group in the status of a balancer (one, or with workers). */
export function group(balancer: { status(): { groups: GroupState[] } }): GroupState {
  return balancer.status().groups.find((g) => g.name === "api")!;
}

/** The upstream of the `api` group at `address`, if it has one. */
export function upstream(
  balancer: { status(): { groups: GroupState[] } },
  address: string,
): UpstreamState | undefined {
  return group(balancer).upstreams.find((u) => u.address === address);
}

/** The value of a series in a Prometheus text exposition. */
export function sample(metrics: string, series: string): number | undefined {
  const line = metrics.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The first group of `/status` on the admin endpoint at `admin`. */
export async function adminGroup(admin: number): Promise<GroupState> {
  const response = await rawRequest(admin, ["GET /status HTTP/1.1", "host: 127.0.0.1"]);
  return (JSON.parse(response.body) as { groups: GroupState[] }).groups[0]!;
}

/** Whether one of 50 connections to `port` reaches the upstream whose banner is `name`. */
export async function reaches(port: number, who: TestCredential, name: string): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const socket = await connectClient(port, who);
    const reached = text(await readBytes(socket, 2)).trim() === name;
    socket.destroy();
    if (reached) return true;
  }
  return false;
}

/** `main.ts` running with JSON logs on stderr; disposing of it kills it and drains them. */
export interface ServingMain extends AsyncDisposable {
  /** The process. */
  child: Deno.ChildProcess;
  /** Its stderr, line by line. */
  reader: AsyncGenerator<string>;
  /** The lines read so far. */
  seen: string[];
}

/** Runs `main.ts` with these flags on the config in `dir`. */
export function serveMain(flags: string[], dir: string): ServingMain {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "main.ts", "--config", dir, "--log-format", "json"],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = lines(child.stderr);
  return {
    child,
    reader,
    seen: [],
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      for await (const _ of reader); // Drain stderr so its resource closes.
      await child.status;
    },
  };
}
