/**
 * `serve` with `[cluster] clients = "shared"`: the instance serves the client policy
 * of the fleet's store instead of its file's `[clients]`, and follows its versions.
 *
 * At start it serves the stored version when the store answers and this instance's
 * groups can serve it; otherwise the file's own `[clients]` (logged as such) until a
 * stored version can be applied; with neither, it does not start. A new version is
 * applied as a reload of `[clients]` is (live connections of clients no longer
 * allowed are handled by `[server] on_policy_change`); one it cannot serve, or a
 * store it cannot reach, leaves the version in force.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Config, parseConfigWithClients } from "../config/mod.ts";
import { errorMessage } from "../core/errors.ts";
import { ClientPolicyFollower } from "../redis/client_policy_follower.ts";
import { RedisClientPolicyStore, type StoredClientPolicy } from "../redis/client_policy_store.ts";
import type { LoadedConfig, ReloadSource } from "../server/lifecycle.ts";
import type { ClientPolicyStatus } from "../server/status.ts";

const log = getLogger(["mtlb", "cluster"]);

/** Thrown when an instance has no client policy to start with. */
export class NoClientPolicyError extends Error {
  /**
   * Creates the error.
   *
   * @param message Why.
   */
  constructor(message: string) {
    super(message);
    this.name = "NoClientPolicyError";
  }
}

/** What a new version is applied to: a `Balancer` or a `WorkerBalancer`. */
export interface PolicyTarget extends EventTarget {
  /** The configuration in force. */
  readonly config: Config;
  /** Reloads; dispatches `"reload"` events. */
  reload(next?: ReloadSource): Promise<void>;
}

/** What the file's text and the policy of each configuration were. */
interface Origin {
  text: string;
  policy: StoredClientPolicy | undefined;
}

/** The shared client policy of one instance. */
export class SharedClients implements AsyncDisposable {
  #store: RedisClientPolicyStore;
  #follower: ClientPolicyFollower | undefined;
  #origins = new WeakMap<Config, Origin>();
  #initial: StoredClientPolicy | undefined;
  #onDerived: (from: Config, to: Config) => void;

  private constructor(
    store: RedisClientPolicyStore,
    initial: StoredClientPolicy | undefined,
    onDerived: (from: Config, to: Config) => void,
  ) {
    this.#store = store;
    this.#initial = initial;
    this.#onDerived = onDerived;
  }

  /**
   * Reads the stored policy and returns the configuration to start with.
   *
   * @param config The file's configuration (its `[cluster]` set).
   * @param text The file's text.
   * @param onDerived Called with each configuration a new version derives from the
   *   one in force, for what the caller keeps per configuration.
   * @returns The instance's shared clients and the configuration to start with.
   * @throws {NoClientPolicyError} When there is no stored version this instance can
   *   serve and the file has no client to fall back on.
   */
  static async open(
    config: Config,
    text: string,
    onDerived: (from: Config, to: Config) => void,
  ): Promise<{ shared: SharedClients; config: Config }> {
    const cluster = config.cluster!;
    const later: { shared?: SharedClients } = {};
    const store = new RedisClientPolicyStore({
      url: cluster.store,
      timeout: Math.max(cluster.timeout, 1000),
      name: `mtlb-policy${cluster.instanceId === undefined ? "" : `:${cluster.instanceId}`}`,
      // After a reconnection: a version announced meanwhile was missed.
      onSubscribed: () => void later.shared?.check(),
    });
    let stored: StoredClientPolicy | undefined;
    let why: string;
    if (await store.connect()) {
      try {
        stored = await store.read();
        why = `the store ${store.url} holds no client policy yet`;
      } catch (error) {
        why = `the store ${store.url} failed: ${errorMessage(error)}`;
      }
    } else {
      why = `the store ${store.url} does not answer`;
    }
    let start = config;
    if (stored !== undefined) {
      try {
        start = withPolicy(config, text, stored);
        log.info("Serving client policy version {version} of {store}", {
          version: stored.version,
          store: store.url,
          sha256: stored.sha256,
        });
      } catch (error) {
        why = `its version ${stored.version} is not valid with this file: ${errorMessage(error)}`;
        stored = undefined;
      }
    }
    if (stored === undefined) {
      if (config.clients.size === 0) {
        await store.close();
        throw new NoClientPolicyError(
          `no client policy to serve: ${why}, and ${config.path} has no [clients] to fall back on; publish one with \`main.ts clients push\``,
        );
      }
      log.warn(
        "Serving the [clients] of {path} until the store has a client policy this instance can serve: {why}",
        { path: config.path, why },
      );
    }
    const shared = new SharedClients(store, stored, onDerived);
    later.shared = shared;
    shared.#origins.set(start, { text, policy: stored });
    return { shared, config: start };
  }

  /**
   * The configuration a reload read from the file, with the policy in force on
   * `running`: what a SIGHUP or a file change applies.
   *
   * @param running The configuration in force.
   * @param loaded The configuration read from the file, and the file's text.
   * @returns The configuration to apply.
   * @throws {ConfigError} When the new file cannot serve the policy in force.
   */
  reloaded(running: Config, loaded: Config, text: string): Config {
    const policy = this.#origins.get(running)?.policy;
    const config = policy === undefined ? loaded : withPolicy(loaded, text, policy);
    this.#origins.set(config, { text, policy });
    return config;
  }

  /**
   * Follows the store's versions, applying each to `balancer` as a reload.
   *
   * @param balancer The running balancer.
   * @returns When the first check is done.
   */
  async follow(balancer: PolicyTarget): Promise<void> {
    const follower = new ClientPolicyFollower({
      store: this.#store,
      ...(this.#initial === undefined ? {} : { initial: this.#initial }),
      apply: async (policy) => {
        // Checked first, so that a version this instance cannot serve is no failed reload.
        const origin = this.#origins.get(balancer.config);
        if (origin !== undefined) withPolicy(balancer.config, origin.text, policy);
        await balancer.reload((running) => this.#derive(running, policy));
      },
    });
    this.#follower = follower;
    // A reload of the file may allow a version refused before.
    balancer.addEventListener("reload", (event) => {
      const outcome = (event as CustomEvent<{ outcome: string }>).detail.outcome;
      if (outcome === "success" && follower.state.refused > 0) void follower.recheck();
    });
    await follower.start();
  }

  /** Checks the store now (after a reconnection of the subscription). */
  check(): Promise<void> {
    return this.#follower?.check() ?? Promise.resolve();
  }

  /** What `/status` and the metrics show. */
  status(): ClientPolicyStatus {
    return this.#follower?.state ?? {
      source: this.#initial === undefined ? "file" : "store",
      ...(this.#initial === undefined ? {} : {
        version: this.#initial.version,
        sha256: this.#initial.sha256,
        pushedAt: this.#initial.pushedAt,
      }),
      storeReachable: this.#initial !== undefined,
      storeErrors: 0,
      refused: 0,
    };
  }

  /** Stops following and closes the store's connections. */
  async close(): Promise<void> {
    await this.#follower?.close();
    await this.#store.close();
  }

  /** Same as {@linkcode SharedClients.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #derive(running: LoadedConfig, policy: StoredClientPolicy): Promise<LoadedConfig> {
    const origin = this.#origins.get(running.config);
    if (origin === undefined) {
      return Promise.reject(new Error("the running configuration's file text is unknown"));
    }
    const config = withPolicy(running.config, origin.text, policy);
    this.#origins.set(config, { text: origin.text, policy });
    this.#onDerived(running.config, config);
    return Promise.resolve({ config, tls: running.tls });
  }
}

/** A configuration with the clients of a policy instead of its file's. */
function withPolicy(config: Config, text: string, policy: StoredClientPolicy): Config {
  const served = parseConfigWithClients(text, policy.document, {
    path: config.path,
    policy: `client policy version ${policy.version}`,
  });
  return { ...config, clients: served.clients };
}
