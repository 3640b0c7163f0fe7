/**
 * Test helpers for the Redis-backed stores: a real `redis-server` on a free port of
 * 127.0.0.1 in a temporary directory (no persistence), which tests can stop, pause
 * and restart; and a limiter instance in a subprocess, to kill like a crash.
 *
 * Run as a script, this module is that subprocess instance:
 * `deno run ... tests/_redis.ts <url> <client> <count> <leaseTtl>` takes `count` slots
 * of `client`, prints `ready`, and holds them until killed.
 *
 * @module
 */
import { systemClock } from "../lib/core/clock.ts";
import { ClientLimiter } from "../lib/limiter/client_limiter.ts";
import { RedisConnection, RedisScript } from "../lib/redis/_redis_connection.ts";
import { RedisLimiterStore } from "../lib/redis/limiter_store.ts";

/** The environment variables node-redis reads: the only ones an instance needs. */
export const REDIS_CLIENT_ENV = "REDIS_DEBUG_MAINTENANCE,REDIS_EMIT_DIAGNOSTICS";

/** Whether `redis-server` is on the PATH (not looked for when run as the instance). */
export const HAVE_REDIS_SERVER: boolean = !import.meta.main &&
  await new Deno.Command("redis-server", {
    args: ["--version"],
    stdout: "null",
    stderr: "null",
  }).output().then((out) => out.success, () => false);

if (!HAVE_REDIS_SERVER && !import.meta.main) {
  console.warn(
    "redis-server is not on the PATH: skipping the Redis store tests (apt-get install redis-server)",
  );
}

/**
 * `Deno.test` for a test that needs `redis-server`: ignored, with the warning above,
 * when it is absent.
 *
 * @param name The test name.
 * @param fn The test.
 */
export function redisTest(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test({ name, ignore: !HAVE_REDIS_SERVER, fn });
}

/**
 * `ACL SETUSER` arguments of the instances' Redis user, as docs/FLEET.md gives them:
 * the limiter's and upstream counts' keys, and only reads of the client policy.
 */
export const INSTANCE_ACL: readonly string[] = [
  "mtlb",
  "on",
  ">instance-secret",
  "resetkeys",
  "~mtlb:limiter:*",
  "~mtlb:upstreams:*",
  "%R~mtlb:policy:*",
  "resetchannels",
  "&mtlb:policy:*",
  "-@all",
  "+@connection",
  "+eval",
  "+evalsha",
  "+time",
  "+get",
  "+set",
  "+del",
  "+hget",
  "+hmget",
  "+hset",
  "+hdel",
  "+hincrby",
  "+hgetall",
  "+zadd",
  "+zrem",
  "+zscore",
  "+zrange",
  "+zremrangebyscore",
  "+pexpireat",
  "+subscribe",
];

/** `ACL SETUSER` arguments of the user `clients push` runs as, as docs/FLEET.md gives them. */
export const PUSH_ACL: readonly string[] = [
  "mtlb-push",
  "on",
  ">push-secret",
  "resetkeys",
  "~mtlb:policy:*",
  "resetchannels",
  "&mtlb:policy:*",
  "-@all",
  "+@connection",
  "+eval",
  "+evalsha",
  "+time",
  "+hget",
  "+hmget",
  "+hset",
  "+publish",
];

/** A `redis-server` child process for one test. */
export class RedisServer implements AsyncDisposable {
  readonly port: number;
  readonly #dir: string;
  #child: Deno.ChildProcess | undefined;
  #drained: Promise<void> = Promise.resolve();

  private constructor(port: number, dir: string) {
    this.port = port;
    this.#dir = dir;
  }

  /**
   * Starts a server on a free port of 127.0.0.1 and waits until it accepts connections.
   *
   * @returns The running server.
   */
  static async start(): Promise<RedisServer> {
    const dir = await Deno.makeTempDir({ prefix: "mtlb_redis_" });
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const server = new RedisServer(port, dir);
      try {
        await server.restart();
        return server;
      } catch (error) {
        lastError = error; // the port was taken meanwhile: try another
      }
    }
    await Deno.remove(dir, { recursive: true });
    throw lastError;
  }

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The server's process id, while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /**
   * Starts the server (again) on the same port and waits for "Ready to accept
   * connections" on its log.
   *
   * @throws {Error} When it exits before it is ready.
   */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error("redis-server is already running");
    const child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        this.#dir,
        "--logfile",
        "",
        "--daemonize",
        "no",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#child = child;
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let log = "";
    while (!log.includes("Ready to accept connections")) {
      const { value, done } = await lines.read();
      if (done) {
        await child.status;
        this.#child = undefined;
        throw new Error(`redis-server did not start on port ${this.port}:\n${log}`);
      }
      log += value;
    }
    // Keep reading so the server never blocks on a full pipe; ends when it exits.
    this.#drained = (async () => {
      while (!(await lines.read()).done);
    })();
  }

  /**
   * Stops the server and waits for it to exit.
   *
   * @param signal `SIGKILL` (the default) for a crash, `SIGTERM` for a clean stop.
   */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
    await child.status;
    await this.#drained;
  }

  /** Freezes the server (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void {
    this.#child?.kill("SIGSTOP");
  }

  /** Thaws a paused server (SIGCONT). */
  resume(): void {
    this.#child?.kill("SIGCONT");
  }

  /** Stops the server and removes its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.resume();
    await this.stop();
    await Deno.remove(this.#dir, { recursive: true });
  }
}

/** A connection of the test's own, to look at what the stores keep in Redis. */
export class RedisProbe implements AsyncDisposable {
  readonly #connection: RedisConnection;

  private constructor(connection: RedisConnection) {
    this.#connection = connection;
  }

  /**
   * Connects to a server.
   *
   * @param server The Redis server.
   * @returns The connected probe.
   * @throws {Error} When the server does not answer within 5 s.
   */
  static async open(server: RedisServer): Promise<RedisProbe> {
    const connection = new RedisConnection({
      url: server.url,
      name: "mtlb-test-probe",
      timeout: 5_000,
      connectTimeout: 5_000,
      staleAfter: 60_000,
      clock: systemClock,
      onReady: () => {},
    });
    if (!(await connection.connect())) {
      await connection.close();
      throw new Error(`Cannot connect to Redis at ${server.url}`);
    }
    return new RedisProbe(connection);
  }

  /**
   * Runs a Lua script.
   *
   * @param script The script.
   * @param args Its arguments (it declares no keys).
   * @returns The script's reply.
   */
  run(script: RedisScript, ...args: string[]): Promise<unknown> {
    return this.#connection.run(script, [], args);
  }

  /**
   * Sends one command (`ACL SETUSER ...`, `HGETALL ...`).
   *
   * @param command The command and its arguments.
   * @returns The reply.
   */
  send(...command: string[]): Promise<unknown> {
    return this.#connection.send(command);
  }

  /** Closes the connection. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#connection.close();
  }
}

/**
 * Lua: the clients with limiter state under the key prefix ARGV[1], a rate key or a
 * slot of any lease, as a sorted list.
 */
export const LIMITER_CLIENTS: RedisScript = new RedisScript(`
local seen, clients = {}, {}
local function add(client)
  if not seen[client] then seen[client] = true; table.insert(clients, client) end
end
local rate = ARGV[1] .. 'limiter:rate:'
for _, key in ipairs(redis.call('KEYS', rate .. '*')) do add(string.sub(key, #rate + 1)) end
for _, key in ipairs(redis.call('KEYS', ARGV[1] .. 'limiter:slots:*')) do
  for _, client in ipairs(redis.call('HKEYS', key)) do add(client) end
end
table.sort(clients)
return clients
`);

/** A limiter instance running in its own process, holding slots until killed. */
export class LimiterProcess implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #stdout: ReadableStreamDefaultReader<string>;
  readonly #stderr: Promise<string>;

  private constructor(
    child: Deno.ChildProcess,
    stdout: ReadableStreamDefaultReader<string>,
    stderr: Promise<string>,
  ) {
    this.#child = child;
    this.#stdout = stdout;
    this.#stderr = stderr;
  }

  /**
   * Starts an instance with only the permissions a real one needs (the Redis port
   * and node-redis' environment variables), and waits until it holds its slots.
   *
   * @param server The Redis server.
   * @param options The client, how many slots to take and the lease TTL.
   * @returns The running instance.
   * @throws {Error} When it exits before it holds its slots.
   */
  static async start(
    server: RedisServer,
    options: { client: string; count: number; leaseTtl: number },
  ): Promise<LimiterProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-net=127.0.0.1:${server.port}`,
        `--allow-env=${REDIS_CLIENT_ENV}`,
        new URL(import.meta.url).pathname,
        server.url,
        options.client,
        String(options.count),
        String(options.leaseTtl),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const stderr = new Response(child.stderr).text();
    const instance = new LimiterProcess(child, stdout, stderr);
    const { value } = await stdout.read();
    if (value?.trim() !== "ready") {
      await instance.kill();
      throw new Error(`Limiter instance did not start: ${value ?? ""}${await stderr}`);
    }
    return instance;
  }

  /** Kills the instance with SIGKILL (no cleanup at all) and waits for it to exit. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    while (!(await this.#stdout.read()).done);
    await this.#stderr;
  }

  /** Same as {@linkcode LimiterProcess.kill}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}

if (import.meta.main) {
  const [url, client, count, leaseTtl] = Deno.args;
  const store = new RedisLimiterStore({ url: url!, leaseTtl: Number(leaseTtl) });
  await store.connect();
  if (store.mode !== "shared") throw new Error(`Cannot reach Redis at ${url}`);
  const limiter = new ClientLimiter({ store, limits: { concurrent: 1_000_000 } });
  const held = [];
  for (let i = 0; i < Number(count); i++) held.push(await limiter.acquire(client!));
  console.log("ready");
  // The lease heartbeat keeps the process alive until it is killed.
}
