/**
 * `deno task demo`: the balancer on `config/lb.toml` with everything it needs on
 * this machine. It writes a development PKI to `certs/` if there is none, starts
 * the demo upstreams the config names (echo servers, and a "cache" that answers
 * `PING` with `+PONG`), runs `main.ts` as a subprocess with exactly the
 * permissions the config needs, prints `openssl s_client` lines to try and the
 * admin endpoint's URLs (dashboard, metrics, status), and stops everything on Ctrl-C.
 *
 * @module
 */
import { createServer, type Server, type Socket } from "node:net";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { formatHostPort, parseHostPort } from "./lib/core/address.ts";
import { DEFAULT_SERVER_NAMES } from "./lib/cli/args.ts";
import { sniGroupNames } from "./lib/cli/sni_coverage.ts";
import { type Config, ConfigError, loadConfig } from "./lib/config/mod.ts";
import { formatRunCommand, permissionFlags } from "./lib/control/permissions.ts";
import { permissionNeeds } from "./lib/control/permission_needs.ts";
import { writeDevPki } from "./lib/pki/dev_pki.ts";

const CONFIG = "config/lb.toml";
const CERTS = "certs";
const CLIENTS = ["alice", "bob"];

/** What a demo upstream does with a connection. */
export type DemoBehaviour = "echo" | "cache";

/** A running set of demo upstreams. */
export interface DemoUpstreams extends AsyncDisposable {
  /** The bound addresses, `host:port`, in the order asked for. */
  addresses: string[];
  /** Stops listening and ends every connection. */
  close(): Promise<void>;
}

/**
 * Handles one connection: `"echo"` sends every byte back; `"cache"` answers each
 * line `PING` with `+PONG\r\n` (as Redis does) and echoes other lines. Both end
 * their side when the peer ends.
 *
 * @param socket The accepted connection.
 * @param behaviour What to do.
 */
export function serveDemoConnection(socket: Socket, behaviour: DemoBehaviour): void {
  socket.on("error", () => {});
  if (behaviour === "echo") {
    socket.pipe(socket);
    return;
  }
  let pending = "";
  socket.setEncoding("latin1");
  socket.on("data", (chunk: string) => {
    pending += chunk;
    for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
      const line = pending.slice(0, newline + 1);
      pending = pending.slice(newline + 1);
      socket.write(line.trim().toUpperCase() === "PING" ? "+PONG\r\n" : line, "latin1");
    }
  });
  socket.on("end", () => socket.end(pending, "latin1"));
}

/**
 * Starts demo upstreams on 127.0.0.1-style `host:port` addresses (port 0: any).
 *
 * @example Usage
 * ```ts ignore
 * import { startDemoUpstreams } from "./demo.ts";
 *
 * await using upstreams = await startDemoUpstreams([["127.0.0.1:0", "cache"]]);
 * console.log(upstreams.addresses);
 * ```
 *
 * @param specs The address and behaviour of each upstream.
 * @returns The running upstreams.
 * @throws {Error} When an address cannot be bound.
 */
export async function startDemoUpstreams(
  specs: readonly (readonly [address: string, behaviour: DemoBehaviour])[],
): Promise<DemoUpstreams> {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const close = async (): Promise<void> => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  };
  try {
    for (const [address, behaviour] of specs) {
      const { hostname, port } = parseHostPort(address);
      const server = createServer({ allowHalfOpen: true }, (socket) => {
        sockets.add(socket);
        socket.once("close", () => sockets.delete(socket));
        serveDemoConnection(socket, behaviour);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: hostname, port }, () => {
          server.off("error", reject);
          resolve();
        });
      });
      servers.push(server);
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    addresses: servers.map((server) => {
      const bound = server.address() as { address: string; port: number };
      return formatHostPort({ hostname: bound.address, port: bound.port });
    }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * The lines the demo prints for the listeners of `config`: `openssl s_client` lines
 * with the client files beside its CA file and, when `[admin] listen` is set, the
 * dashboard's URL and `curl` lines for `/metrics` and `/status`.
 *
 * @param config The demo configuration.
 * @param cwd Paths are shown relative to this folder.
 * @returns Commented command lines.
 */
export function demoCommands(config: Config, cwd: string = Deno.cwd()): string {
  const file = (name: string) => relative(cwd, join(dirname(config.tls.ca), name));
  const client = (name: string) =>
    `-cert ${file(`${name}.crt`)} -key ${file(`${name}.key`)} -CAfile ${file("ca.crt")}`;
  const shared = config.server.listen!;
  const echo = config.groups.get("echo")?.listen;
  const sClient = "openssl s_client -brief";
  return [
    "# alice, allowed: type a line and it comes back (dedicated listener of group echo)",
    echo === undefined
      ? `${sClient} -connect ${shared} -servername echo ${client("alice")}`
      : `${sClient} -connect ${echo} ${client("alice")}`,
    "# alice, allowed, group cache chosen by SNI on the shared listener: type PING",
    "# (the server certificate names cache: openssl reports the host name verified)",
    `${sClient} -connect ${shared} -servername cache -verify_hostname cache ${client("alice")}`,
    "# bob, denied: bob may not use group cache; closed right after the handshake, no reply",
    `${sClient} -connect ${shared} -servername cache ${client("bob")}`,
    "# intruder, refused: its certificate comes from an untrusted CA. In TLS 1.3 the client",
    "# finishes first, so openssl may still print CONNECTION ESTABLISHED; the server then ends",
    "# the connection (the log says unknown_ca) and nothing comes back",
    `${sClient} -connect ${shared} ${client("intruder")}`,
    ...adminCommands(config),
  ].join("\n");
}

/** The dashboard URL and `curl` lines for the admin endpoint, if the config has one. */
function adminCommands(config: Config): string[] {
  const { listen, tokenFile } = config.admin;
  if (listen === undefined) return [];
  const { hostname, port } = parseHostPort(listen);
  const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "::1" : hostname;
  const base = `http://${formatHostPort({ hostname: host, port })}`;
  const auth = tokenFile === undefined ? "" : ` -H "Authorization: Bearer $(cat ${tokenFile})"`;
  return [
    "# the dashboard: open it in a browser (it updates itself)",
    `${base}/`,
    "# the same figures for scripts: Prometheus metrics, and the status as JSON",
    `curl -s${auth} ${base}/metrics`,
    `curl -s${auth} ${base}/status`,
  ];
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Forwards the child's stderr to ours; resolves `true` once it logs that it started. */
async function watchStarted(stream: ReadableStream<Uint8Array>): Promise<boolean> {
  const decoder = new TextDecoder();
  let line = "";
  let started = false;
  let resolveStarted!: (value: boolean) => void;
  const result = new Promise<boolean>((resolve) => resolveStarted = resolve);
  (async () => {
    for await (const chunk of stream) {
      Deno.stderr.writeSync(chunk);
      if (started) continue;
      line += decoder.decode(chunk, { stream: true });
      if (/ started: listening on /.test(line)) {
        started = true;
        resolveStarted(true);
      }
      line = line.slice(line.lastIndexOf("\n") + 1);
    }
    resolveStarted(false);
  })();
  return await result;
}

async function demo(): Promise<number> {
  let config: Config;
  try {
    config = await loadConfig(CONFIG);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    return 2;
  }
  if (!(await exists(`${CERTS}/ca.crt`))) {
    // The server certificate names the groups clients choose by SNI, so clients that
    // check host names accept it under those names.
    const pki = await writeDevPki(CERTS, {
      clients: CLIENTS,
      serverNames: [...DEFAULT_SERVER_NAMES, ...sniGroupNames(config)],
    });
    console.log(
      `Wrote a development PKI to ${pki.dir}/: CA, server (for ${pki.serverNames.join(", ")}), ${
        CLIENTS.join(", ")
      } and an untrusted "intruder".`,
    );
  } else {
    console.log(`Using the development PKI in ${CERTS}/ (delete it to get a fresh one).`);
  }
  const specs = [...config.groups.values()].flatMap((group) =>
    group.upstreams.map((u) => [u.address, group.name === "cache" ? "cache" : "echo"] as const)
  );
  await using upstreams = await startDemoUpstreams(specs);
  console.log(`Demo upstreams on ${upstreams.addresses.join(", ")}.`);

  const needs = permissionNeeds(config);
  const main = fileURLToPath(new URL("./main.ts", import.meta.url));
  const args = ["--config", config.path, "--log-format", "text"];
  console.log(`Starting: ${formatRunCommand(needs, { main, args })}\n`);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissionFlags(needs), main, ...args],
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).spawn();

  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  try {
    const ended = child.status.then((status) => status.code);
    if (await Promise.race([watchStarted(child.stderr), ended.then(() => false)])) {
      console.log(`\nTry it (Ctrl-C stops the demo):\n\n${demoCommands(config)}\n`);
    }
    const stopped = new Promise<void>((resolve) =>
      stop.signal.addEventListener("abort", () => resolve(), { once: true })
    );
    if (await Promise.race([ended.then(() => false), stopped.then(() => true)])) {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone: the terminal's Ctrl-C reached it too.
      }
      await ended;
      return 0;
    }
    return await ended;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  }
}

if (import.meta.main) Deno.exit(await demo());
