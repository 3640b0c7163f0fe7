/**
 * `main.ts serve`: checks the config, its certificates and the permissions it
 * needs, runs the balancer (on every core with more than one worker) and its admin
 * endpoint, reloads on SIGHUP or file changes, and drains on a stop signal.
 *
 * @module
 */
import { resolve } from "node:path";
import { getLogger } from "@logtape/logtape";
import { AddressInUseError, assertAddressesFree } from "../listener/exclusive_bind.ts";
import { formatHostPort, type HostPort } from "../core/address.ts";
import {
  type Config,
  ConfigError,
  loadAdminToken,
  loadConfig,
  loadTlsMaterial,
} from "../config/mod.ts";
import { formatDuration } from "../core/duration.ts";
import { configureLogging } from "../control/logging.ts";
import { checkPermissions, formatRunCommand, permissionFlags } from "../control/permissions.ts";
import { permissionNeeds, workerCount } from "../control/permission_needs.ts";
import { assertSupportedRuntime } from "../core/runtime.ts";
import { AdminServer } from "../admin/admin_server.ts";
import { FileWatcher } from "../control/file_watcher.ts";
import { Balancer } from "../server/balancer.ts";
import type { LoadedConfig } from "../server/lifecycle.ts";
import { WorkerBalancer } from "../workers/worker_balancer.ts";
import type { CliCommand } from "./args.ts";
import { checkCertificateDates, upstreamCertificates } from "./certificate_dates.ts";
import { checkIssuerPins } from "./issuer_pins.ts";
import { sniCoverageWarning } from "./sni_coverage.ts";
import type { StopSignals } from "./signals.ts";
import type { SharedClients } from "./_shared_clients.ts";
import { readAdminToken, readConfig, readTls } from "./_read_config.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./exit_codes.ts";
import type { Io } from "./_io.ts";
import { errorMessage } from "../core/errors.ts";

const log = getLogger(["mtlb", "main"]);

/**
 * Runs `serve` until `stop.signal` aborts, then drains the balancer and closes it
 * (at once when `stop.force` aborts). Nothing listens unless the runtime, the
 * config, its certificates and the Deno permissions it needs are all fine.
 *
 * @param command The parsed `serve` command line.
 * @param io Output, version and clock.
 * @param stop When to drain, and when to close every connection at once.
 * @param hangup Dispatches `"reload"` to reload the config.
 * @returns {@linkcode EXIT_OK} once stopped; {@linkcode EXIT_USAGE} for a config,
 *   certificate or permission to fix; {@linkcode EXIT_FAILURE} when the balancer
 *   cannot run (unsupported Deno, an address that cannot be bound).
 */
export async function serveCommand(
  command: Extract<CliCommand, { command: "serve" }>,
  io: Io,
  stop: StopSignals,
  hangup?: EventTarget,
): Promise<number> {
  try {
    assertSupportedRuntime();
  } catch (error) {
    io.err(`${errorMessage(error)}\n`);
    return EXIT_FAILURE;
  }
  const args = ["--config", resolve(command.config)];
  const config = await readConfig(command.config, io, args);
  if (typeof config === "number") return config;
  // Checked before the certificates are read, so that Deno never prompts.
  const needs = permissionNeeds(config);
  const report = checkPermissions(needs);
  const missing = [...report.missing.net, ...report.missing.read, ...report.missing.env ?? []];
  if (missing.length > 0 || report.missing.anyHost === true) {
    io.err(
      `Cannot start: Deno lacks permissions this config needs: ${
        permissionFlags(report.missing).join(" ")
      }\nRun it with exactly the permissions it needs:\n  ${
        formatRunCommand(needs, { main: io.main, args })
      }\n`,
    );
    return EXIT_USAGE;
  }
  const tls = await readTls(config, io);
  if (typeof tls === "number") return tls;
  const adminToken = await readAdminToken(config, io);
  if (typeof adminToken === "number") return adminToken;
  const findings = checkCertificateDates(tls.certificates, io.now());
  const expired = findings.filter((f) => f.level === "error");
  if (expired.length > 0) {
    io.err(`Cannot start: ${expired.map((f) => f.message).join("; ")}\n`);
    return EXIT_USAGE;
  }

  await using _logging = await configureLogging({
    format: command.logFormat ?? config.log.format,
    level: command.logLevel,
  });
  for (const finding of findings) log.warn(finding.message);
  for (const finding of checkCertificateDates(upstreamCertificates(tls), io.now())) {
    log.warn(
      `${finding.message}${
        finding.level === "error" ? ": connections to its group will be refused" : ""
      }`,
    );
  }
  // The admin token read with each config: a reload that cannot read it fails as a
  // whole, so the token and the config it belongs to change together.
  const adminTokens = new WeakMap<Config, string | undefined>([[config, adminToken]]);
  // With [cluster] clients = "shared", the clients come from the fleet's store.
  let shared: SharedClients | undefined;
  let served = config;
  if (config.cluster?.clients === "shared") {
    // Redis is loaded only for a config with [cluster].
    const { NoClientPolicyError, SharedClients } = await import("./_shared_clients.ts");
    try {
      ({ shared, config: served } = await SharedClients.open(
        config,
        await Deno.readTextFile(config.path),
        (from, to) => adminTokens.set(to, adminTokens.get(from)),
      ));
    } catch (error) {
      if (!(error instanceof NoClientPolicyError)) throw error;
      log.error("Cannot start: {reason}", { reason: error.message });
      return EXIT_FAILURE;
    }
    adminTokens.set(served, adminToken);
  }
  await using _shared = shared;
  const load = async (path: string): Promise<LoadedConfig> => {
    const loaded = await loadForReload(path, io);
    if (shared !== undefined) {
      const text = await Deno.readTextFile(loaded.config.path);
      loaded.config = shared.reloaded(balancer.config, loaded.config, text);
    }
    adminTokens.set(loaded.config, loaded.adminToken);
    return loaded;
  };
  for (const warning of checkIssuerPins(config, tls.authorities ?? [])) log.warn(warning);
  const uncovered = sniCoverageWarning(config, tls);
  if (uncovered !== undefined) log.warn(`${uncovered[0]!.toUpperCase()}${uncovered.slice(1)}`);
  if (report.broader.length > 0) {
    log.warn("Permissions broader than this config needs: {broader}; narrow them with: {run}", {
      broader: report.broader.join(", "),
      run: formatRunCommand(needs, { main: io.main, args }),
    });
  }

  // A fleet shares limits and upstream counts through [cluster] store (Redis).
  await using cluster = config.cluster === undefined
    ? undefined
    : await (await import("../redis/cluster.ts")).connectCluster(config.cluster);
  const workers = workerCount(config);
  if (cluster !== undefined && (config.server.workers ?? 1) > 1) {
    log.warn(
      "[server] workers = {workers} is not supported with [cluster] yet: running one event loop; run one process per core instead",
      { workers: config.server.workers },
    );
  }
  // Every address must be this process's alone: workers share theirs with
  // SO_REUSEPORT, which another process of the same user could join.
  try {
    assertAddressesFree(listenAddresses(config));
  } catch (error) {
    log.error("Cannot start: {reason}", { reason: bindFailure(error) });
    return EXIT_FAILURE;
  }
  const balancer = workers > 1
    ? workerBalancer(command, { config, tls, workers, load })
    : new Balancer({
      config: served,
      tls,
      load,
      ...(shared === undefined ? {} : { clientPolicy: () => shared.status() }),
      ...(cluster === undefined ? {} : {
        limiterStore: cluster.limiterStore,
        upstreamCounts: cluster.upstreamCounts,
        bandwidthStore: cluster.bandwidthStore,
      }),
    });
  try {
    await balancer.start();
  } catch (error) {
    log.error("Cannot start: {reason}", { reason: bindFailure(error) });
    return EXIT_FAILURE;
  }
  await shared?.follow(balancer);
  let admin: AdminServer | undefined;
  if (config.admin.listen !== undefined) {
    try {
      admin = AdminServer.start(balancer, {
        listen: config.admin.listen,
        allowReload: () => balancer.config.admin.allowReload,
        hosts: () => balancer.config.admin.hosts,
        token: () => {
          const running = balancer.config;
          if (!adminTokens.has(running)) {
            // Never answer without the token a config asks for.
            throw new Error("No admin token was read with the running configuration");
          }
          return adminTokens.get(running);
        },
      });
    } catch (error) {
      log.error("Cannot start the admin endpoint on {address}: {reason}", {
        address: config.admin.listen,
        reason: bindFailure(error),
      });
      await balancer.close();
      return EXIT_FAILURE;
    }
  }
  // Reload triggers; a failed reload is logged and counted by the balancer.
  const reload = (): void => void balancer.reload().catch(() => {});
  const onHangup = (): void => {
    log.info("Reloading on SIGHUP");
    reload();
  };
  hangup?.addEventListener("reload", onHangup);
  let watcher: FileWatcher | undefined;
  if (config.server.watch) {
    watcher = new FileWatcher(
      () => watchedFiles(balancer.config),
      () => balancer.reload().catch(() => {}),
    );
    watcher.start();
  }

  if (!stop.signal.aborted) {
    log.info("mtlb {version} started: listening on {addresses}", {
      version: io.version,
      addresses: balancer.listeners().map((l) => formatHostPort(l.address)),
      config: config.path,
      ...(admin === undefined ? {} : { admin: formatHostPort(admin.address) }),
    });
    await new Promise<void>((resolve) =>
      stop.signal.addEventListener("abort", () => resolve(), { once: true })
    );
  }
  hangup?.removeEventListener("reload", onHangup);
  await watcher?.close();
  const timeout = balancer.config.server.drainTimeout;
  log.info("Stopping on {signal}: draining for up to {timeout}", {
    signal: String(stop.signal.reason),
    timeout: formatDuration(timeout),
  });
  const onForce = (): void => {
    log.warn("Closing every connection now on {signal}", { signal: String(stop.force?.reason) });
    void balancer.close();
  };
  stop.force?.addEventListener("abort", onForce, { once: true });
  const drained = await balancer.drain(timeout);
  stop.force?.removeEventListener("abort", onForce);
  await admin?.close();
  log.info("Stopped", { forced: drained.forced, durationMs: drained.durationMs });
  return EXIT_OK;
}

/**
 * Reads a configuration for a reload with the checks `serve` makes at start: the
 * permissions it needs are held, its certificates and admin token read and no
 * certificate has expired.
 */
async function loadForReload(
  path: string,
  io: Io,
): Promise<LoadedConfig & { adminToken: string | undefined }> {
  const config = await loadConfig(path);
  const needs = permissionNeeds(config);
  const missing = checkPermissions(needs).missing;
  if (missing.net.length > 0 || missing.read.length > 0 || missing.anyHost === true) {
    throw new ConfigError(
      `Deno lacks permissions this config needs: ${
        permissionFlags(missing).join(" ")
      }; restart with exactly the permissions it needs: ${
        formatRunCommand(needs, { main: io.main, args: ["--config", resolve(path)] })
      }`,
      { path: config.path },
    );
  }
  const tls = await loadTlsMaterial(config);
  const adminToken = await loadAdminToken(config);
  const expired = checkCertificateDates(tls.certificates, io.now())
    .filter((f) => f.level === "error");
  if (expired.length > 0) {
    throw new ConfigError(expired.map((f) => f.message).join("; "), { path: config.path });
  }
  return { config, tls, adminToken };
}

/**
 * More than one worker: the balancer on every core. This thread probes health and
 * serves the admin endpoint; the workers log as this thread does.
 */
function workerBalancer(
  command: Extract<CliCommand, { command: "serve" }>,
  { config, tls, workers, load }: LoadedConfig & {
    workers: number;
    load: (path: string) => Promise<LoadedConfig>;
  },
): WorkerBalancer {
  return new WorkerBalancer({
    config,
    tls,
    workers,
    load,
    logging: { format: command.logFormat ?? config.log.format, level: command.logLevel },
  });
}

/** The files a reload reads: what `watch = true` watches. */
function watchedFiles(config: Config): string[] {
  const { tls, admin } = config;
  return [
    config.path,
    tls.ca,
    tls.cert,
    tls.key,
    ...(tls.crl === undefined ? [] : [tls.crl]),
    ...[...config.groups.values()].flatMap((group) =>
      group.tls === undefined
        ? []
        : [group.tls.ca, group.tls.cert, group.tls.key].filter((file) => file !== undefined)
    ),
    ...(admin.tokenFile === undefined ? [] : [admin.tokenFile]),
  ];
}

/** Every address a config listens on: the shared listener, the groups' own, the admin endpoint. */
function listenAddresses(config: Config): string[] {
  const addresses: string[] = [];
  if (config.server.listen !== undefined) addresses.push(config.server.listen);
  for (const group of config.groups.values()) {
    if (group.listen !== undefined) addresses.push(group.listen);
  }
  if (config.admin.listen !== undefined) addresses.push(config.admin.listen);
  return addresses;
}

/** A sentence for a listener that could not bind. */
function bindFailure(error: unknown): string {
  if (error instanceof AddressInUseError) {
    return `address ${error.address} already in use by another process`;
  }
  const code = (error as { code?: unknown } | null)?.code;
  const address = error as { address?: unknown; port?: unknown } | null;
  const where = typeof address?.address === "string" && typeof address.port === "number"
    ? ` ${formatHostPort({ hostname: address.address, port: address.port } as HostPort)}`
    : "";
  if (code === "EADDRINUSE") return `address${where} already in use by another process`;
  if (code === "EACCES") {
    return `permission denied to listen on${where} (ports below 1024 need privileges)`;
  }
  if (code === "EADDRNOTAVAIL") return `address${where} is not an address of this machine`;
  if (error instanceof Deno.errors.NotCapable) {
    return `${errorMessage(error)} (listeners on host names resolve to addresses Deno must allow)`;
  }
  return errorMessage(error);
}
