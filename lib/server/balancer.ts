/**
 * The mTLS balancer: `node:tls` listeners that verify client certificates,
 * identify and authorize each client, apply its limits and forward its bytes to
 * the least-loaded healthy upstream of its group; reloadable without dropping a
 * connection, drainable, observable through metrics and a status snapshot.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatHostPort, parseHostPort } from "../core/address.ts";
import { ClientLimiter } from "../limiter/client_limiter.ts";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";
import { SharedTimerClock } from "../core/shared_timer_clock.ts";
import { formatDuration } from "../core/duration.ts";
import type { Config, GroupConfig, TlsMaterial } from "../config/mod.ts";
import type { RevocationList } from "../identity/crl.ts";
import { dialTcp } from "../upstream/dial.ts";
import { tlsDialer } from "../upstream/tls_dial.ts";
import { connectorFor, type GroupConnectorOptions } from "./group_connector.ts";
import { setUpstreamExpiry, upstreamCertificateStatus } from "./_upstream_certificates.ts";
import {
  type ConnectionCaps,
  connectionCaps,
  readFileDescriptorLimit,
} from "../listener/connection_caps.ts";
import type { DnsResolver } from "../upstream/dns_resolver.ts";
import { HealthProbe } from "../upstream/health_probe.ts";

import { peerCertificateChain } from "../identity/_peer_certificate.ts";
import type { ClientTrust } from "../identity/client_trust.ts";

import type { ClientHelloInfo } from "../listener/_tls_server_hooks.ts";
import {
  type BoundListener,
  type SecureContextOptions,
  secureContextOptions,
  TlsListeners,
} from "../listener/tls_listeners.ts";
import type { LeastConnPool } from "../upstream/least_conn_pool.ts";
import type { UpstreamCounts } from "../upstream/upstream_counts.ts";
import type { OutlierDetector } from "../upstream/outlier_detector.ts";

import { MetricsRegistry } from "../metrics/registry.ts";
import { Policy } from "../policy/policy.ts";
import { readmit } from "../policy/admission.ts";
import { LiveSessions } from "./live_sessions.ts";
import { Lifecycle, type LoadedConfig, type ReloadSource } from "./lifecycle.ts";

import { BalancerMetrics } from "./_balancer_metrics.ts";
import { clientPolicyMetrics } from "./_client_policy_metrics.ts";
import { type BalancerOptions, buildTrust, defaultLoad, wantedListeners } from "./options.ts";
import { Refusals } from "./refusals.ts";
import { SessionRunner } from "./session.ts";
import { logReload, plural } from "./reload_log.ts";
import { type GroupHealthSource, UpstreamGroup } from "./upstream_group.ts";
import { configuredResolver } from "./_group_dns.ts";
import { DnsReports } from "./_relayed_dns.ts";
import { RelayedHealth, type RelayedReport, storeReport } from "./group_health.ts";
import type { DnsReport, HealthReport } from "./records.ts";
import { clientStates } from "./status.ts";
import type {
  BalancerCounters,
  BalancerState,
  BalancerStatus,
  ClientPolicyStatus,
  DrainResult,
  ListenerInfo,
} from "./status.ts";

const log = getLogger(["mtlb", "server"]);

/**
 * The mTLS layer-4 balancer.
 *
 * Every listener is a `node:tls` server that accepts TLS 1.3 only, with ECDHE
 * key exchange, requests a client certificate and verifies it against the
 * configured CA (validity and the clientAuth extended key usage included). After
 * the handshake the balancer checks the certificate against the CRL, reads the
 * client's identity, matches it against the policy, picks the group (dedicated
 * listener, else SNI, else ALPN, else the client's only group), takes a slot from
 * the client's limits and forwards to the group's least-loaded healthy upstream,
 * after a PROXY v2 header when the group asks for one. A refused connection is
 * closed right after its handshake: nothing of it reaches an upstream, and the
 * client learns nothing of why; the log and the `"deny"` event say why.
 *
 * Operations: {@linkcode Balancer.reload} swaps in a new configuration and TLS
 * material without dropping a connection; {@linkcode Balancer.drain} stops
 * accepting and lets live connections finish; {@linkcode Balancer.metrics} and
 * {@linkcode Balancer.status} describe it.
 *
 * Events (all plain `CustomEvent`s): `"deny"` ({@linkcode DenyRecord}), `"end"`
 * ({@linkcode ConnectionRecord}), `"handshake_error"`
 * ({@linkcode HandshakeErrorRecord}), `"reload"` ({@linkcode ReloadRecord}),
 * `"state"` (the new {@linkcode BalancerState}), and with `health: "external"`
 * `"passive_health"` ({@linkcode PassiveHealthRecord}).
 *
 * `Deno 2.9`'s `node:tls` does not enforce `ciphersuites`, so the negotiated
 * suite is checked after the handshake and a connection on a suite that is not
 * configured is refused (`cipher_not_allowed`). Its `handshakeTimeout` is not
 * enforced either: the balancer arms its own timer per accepted socket. It ignores
 * the `crl` option too: CRLs are checked after the handshake (see `RevocationList`).
 *
 * @example Usage
 * ```ts ignore
 * import { Balancer } from "@mtlb/mtlb";
 *
 * const config = await loadConfig("config/lb.toml");
 * await using balancer = new Balancer({ config, tls: await loadTlsMaterial(config) });
 * await balancer.start();
 * Deno.addSignalListener("SIGHUP", () => balancer.reload().catch(() => {}));
 * ```
 */
export class Balancer extends EventTarget implements AsyncDisposable {
  #config: Config;
  #tls: TlsMaterial;
  #clock: Clock;
  #wall: () => number;
  #resolver: DnsResolver;
  /** How groups reach their upstreams, but for their TLS material and DNS names. */
  #connectors: Omit<GroupConnectorOptions, "nameOf">;
  #load: (path: string) => Promise<LoadedConfig>;
  #policy: Policy;
  #crl: RevocationList | undefined;
  #trust!: ClientTrust;
  #limiter: ClientLimiter;
  #upstreamCounts: UpstreamCounts | undefined;
  #externalHealth: boolean;
  #fileDescriptors: number | undefined;
  #logLifecycle: boolean;
  #caps: ConnectionCaps;
  /** Health reported with `setHealth`, by group then address (external health only). */
  #reports = new Map<string, Map<string, RelayedReport>>();
  /** DNS upstreams reported with `setDnsUpstreams` (external DNS only). */
  #dnsReports: DnsReports | undefined;
  #registry: MetricsRegistry;
  #metrics: BalancerMetrics;
  #groups = new Map<string, UpstreamGroup>();
  #groupNames: string[] = [];
  #net: TlsListeners;
  #listeners: BoundListener[] = [];
  /** Listeners a reload replaced: no longer accepting, closing when their connections end. */
  #retired = new Set<Promise<void>>();
  /** Probes of groups a reload removed, settling. */
  #retiredProbes = new Set<Promise<void>>();
  #closing = new AbortController();
  /** Connections open when close() began, for a drain it cut short. */
  #openAtClose = 0;
  /** Forwarded connections, for reloads that re-check them and for max_lifetime. */
  #sessions: LiveSessions;
  #refusals: Refusals;
  #runner: SessionRunner;
  /** Ends a drain's wait when close() comes first. */
  #stopWaiting: PromiseWithResolvers<void> | undefined;
  #ciphers: Set<string>;
  #life: Lifecycle;
  #collect: Disposable;
  #clientPolicy: (() => ClientPolicyStatus) | undefined;
  #collectPolicy: Disposable | undefined;
  /** Live counters; read them, do not change them. */
  readonly counters: BalancerCounters = {
    accepted: 0,
    denied: new Map(),
    handshakeErrors: new Map(),
    active: 0,
  };

  /**
   * Creates a balancer; nothing listens until {@linkcode Balancer.start}.
   *
   * @param options The configuration, TLS material and injectables.
   * @throws {TypeError} When `options.metrics` already has `mtlb_*` metrics.
   */
  constructor(options: BalancerOptions) {
    super();
    this.#config = options.config;
    this.#tls = options.tls;
    this.#clock = new SharedTimerClock(options.clock ?? systemClock);
    this.#wall = options.wallClock ?? Date.now;
    this.#resolver = options.resolver ?? configuredResolver(() => this.#config.server);
    const { dial = dialTcp, healthCheck, connectTls = tlsDialer } = options;
    this.#connectors = { dial, connectTls, healthCheck, wall: this.#wall };
    this.#load = options.load ?? defaultLoad;
    this.#policy = new Policy(options.config);
    this.#limiter = new ClientLimiter({
      clock: this.#clock,
      ...(options.limiterStore === undefined ? {} : { store: options.limiterStore }),
    });
    this.#upstreamCounts = options.upstreamCounts;
    this.#externalHealth = options.health === "external";
    if (options.dns === "external") this.#dnsReports = new DnsReports();
    this.#fileDescriptors = options.fileDescriptorLimit ?? readFileDescriptorLimit();
    this.#logLifecycle = options.logLifecycle ?? true;
    this.#caps = connectionCaps(options.config.server, this.#fileDescriptors);
    this.#ciphers = new Set(options.config.tls.ciphers);
    this.#registry = options.metrics ?? new MetricsRegistry();
    this.#metrics = new BalancerMetrics(this.#registry);
    this.#collect = this.#registry.onCollect(() => this.#collectMetrics());
    this.#clientPolicy = options.clientPolicy;
    if (options.clientPolicy !== undefined) {
      this.#collectPolicy = clientPolicyMetrics(this.#registry, options.clientPolicy);
    }
    this.#refusals = new Refusals({
      counters: this.counters,
      metrics: this.#metrics,
      events: this,
      clock: this.#clock,
      wall: this.#wall,
    });
    this.#sessions = new LiveSessions({
      clock: this.#clock,
      maxLifetime: () => this.#config.server.maxLifetime,
      onEnd: (session, reason, detail) => {
        this.#metrics.sessionEndFor(reason).inc();
        log.warn("Closing a connection of {client} to {group}: {reason}", {
          client: session.client,
          group: session.group,
          reason,
          detail,
        });
      },
    });
    this.#runner = new SessionRunner({
      clock: this.#clock,
      wall: this.#wall,
      limiter: this.#limiter,
      ...(options.bandwidthStore === undefined ? {} : { bandwidth: options.bandwidthStore }),
      metrics: this.#metrics,
      counters: this.counters,
      refusals: this.#refusals,
      sessions: this.#sessions,
      closing: this.#closing.signal,
      scope: () => ({
        config: this.#config,
        policy: this.#policy,
        trust: this.#trust,
        ciphers: this.#ciphers,
        groups: this.#groups,
      }),
      onEnd: (record) => this.#emit("end", record),
    });
    this.#net = new TlsListeners({
      clock: this.#clock,
      reusePort: options.reusePort ?? false,
      ...(options.connectionCount === undefined
        ? {}
        : { connectionCount: options.connectionCount }),
      handshakeShare: options.handshakeShare ?? 1,
      logListening: this.#logLifecycle,
      settings: () => ({
        caps: this.#caps,
        handshakeTimeout: this.#config.server.handshakeTimeout,
      }),
      selectAlpn: (hello, group) => this.#selectAlpn(hello, group),
      needsClientHello: (g) => g === undefined || !!this.#config.groups.get(g)?.alpn?.length,
      onSecure: (connection) => this.#runner.start(connection),
      onFull: (remote, detail) => this.#refusals.count({ reason: "server_full", remote, detail }),
      onHandshakeError: (record) => this.#refusals.handshakeFailed(record),
    });
    this.#life = new Lifecycle({
      events: this,
      wall: this.#wall,
      metrics: this.#metrics,
      steps: {
        path: () => this.#config.path,
        apply: async (next) => {
          const loaded = typeof next === "function"
            ? await next({ config: this.#config, tls: this.#tls })
            : next ?? await this.#load(this.#config.path);
          await this.#apply(loaded.config, loaded.tls);
        },
        applied: () => this.#updateStaticMetrics(),
        drain: (timeout) => this.#drain(timeout),
        shutdown: () => this.#shutdown(),
      },
    });
  }

  /**
   * Checks the CRL, starts health probes, waits for their first round, then listens.
   *
   * @returns When every listener is bound.
   * @throws {CrlError} When `[tls] crl` cannot be used (see `RevocationList.parse`).
   * @throws {Error} When a listener cannot bind (address in use, permission).
   */
  async start(): Promise<void> {
    this.#life.begin();
    ({ trust: this.#trust, crl: this.#crl } = await buildTrust(
      this.#config,
      this.#tls,
      this.#wall(),
    ));
    this.#groupNames = [...this.#config.groups.keys()];
    for (const group of this.#config.groups.values()) {
      this.#groups.set(group.name, this.#newGroup(group));
    }
    try {
      // DNS entries are looked up before anything listens: one that finds nothing stops here.
      await Promise.all([...this.#groups.values()].map((g) => g.discover()));
    } catch (error) {
      await this.close();
      throw error;
    }
    await Promise.all([...this.#groups.values()].map((g) => g.probe.ready));
    try {
      for (const { address, group } of wantedListeners(this.#config)) {
        this.#life.assertIdle();
        this.#listeners.push(
          await this.#net.listen(address, group, contextOf(this.#config, this.#tls)),
        );
      }
    } catch (error) {
      await this.close();
      throw error;
    }
    this.#life.serving();
    this.#updateStaticMetrics();
  }

  /** The life-cycle state. */
  get state(): BalancerState {
    return this.#life.state;
  }

  /** The configuration in use (the latest one a reload applied). */
  get config(): Config {
    return this.#config;
  }

  /** The registry holding the `mtlb_*` metrics; `render()` it for `/metrics`. */
  get metrics(): MetricsRegistry {
    return this.#registry;
  }

  /**
   * The addresses bound, in configuration order (shared listener first).
   *
   * @returns One entry per listener.
   */
  listeners(): ListenerInfo[] {
    return this.#listeners.map(({ server, group }) => {
      const bound = server.address();
      const address = typeof bound === "object" && bound !== null
        ? { hostname: bound.address, port: bound.port }
        : { hostname: "", port: 0 };
      return group === undefined ? { address } : { group, address };
    });
  }

  /**
   * The pool of a group, for status and metrics.
   *
   * @param group The group name.
   * @returns The pool, or `undefined` for an unknown group.
   */
  pool(group: string): LeastConnPool | undefined {
    return this.#groups.get(group)?.pool;
  }

  /**
   * The health probe of a group, for status and metrics.
   *
   * @param group The group name.
   * @returns The probe, or `undefined` for an unknown group and with `health: "external"`.
   */
  probe(group: string): HealthProbe | undefined {
    const probe = this.#groups.get(group)?.probe;
    return probe instanceof HealthProbe ? probe : undefined;
  }

  /**
   * The outlier detection of a group (passive ejection), for status and tests.
   *
   * @param group The group name.
   * @returns The detector, or `undefined` for an unknown group and with
   * `health: "external"`.
   */
  outlier(group: string): OutlierDetector | undefined {
    return this.#groups.get(group)?.outlier;
  }

  /**
   * Sets an upstream's health, for a balancer created with `health: "external"`. A
   * report may come before the group or upstream exists (before
   * {@linkcode Balancer.start}, or before the reload that adds it): it is kept and
   * applies when they do, so report the health of new upstreams before the reload.
   *
   * @example Usage
   * ```ts ignore
   * import { Balancer } from "@mtlb/mtlb";
   *
   * const config = await loadConfig("config/lb.toml");
   * const tls = await loadTlsMaterial(config);
   * const balancer = new Balancer({ config, tls, health: "external" });
   * balancer.setHealth("cache", { address: "127.0.0.1:6379", healthy: true, reason: "probe_ok" });
   * await balancer.start();
   * ```
   *
   * @param group The group name.
   * @param report The upstream, whether it is healthy, and why.
   * @throws {TypeError} When the balancer runs its own probes (`health: "probe"`).
   */
  setHealth(group: string, report: HealthReport): void {
    if (!this.#externalHealth) {
      throw new TypeError(
        'Cannot set upstream health: the balancer runs its own health checks (health is "probe")',
      );
    }
    const health = this.#groups.get(group)?.probe;
    if (health instanceof RelayedHealth) {
      health.apply(report);
      return;
    }
    let reports = this.#reports.get(group);
    if (reports === undefined) this.#reports.set(group, reports = new Map());
    storeReport(reports, report, this.#clock.now());
  }

  /**
   * Sets the upstreams of a group's DNS entries (`dns: "external"`), applied as a new
   * answer is (during a reload, once it ends). A report may come before the group or
   * its entries exist: it applies when they do (report a reload's before it).
   *
   * @param group The group name.
   * @param report Every entry's upstreams, by entry; the entries left out have none.
   * @throws {TypeError} When the balancer looks its entries up itself (`dns: "lookup"`).
   */
  setDnsUpstreams(group: string, report: DnsReport): void {
    if (this.#dnsReports === undefined) {
      throw new TypeError('Cannot set DNS upstreams: the balancer looks them up (dns is "lookup")');
    }
    this.#dnsReports.set(group, report);
    this.#groups.get(group)?.reported();
  }

  /** The per-client limiter, for status and metrics. */
  get limiter(): ClientLimiter {
    return this.#limiter;
  }

  /**
   * A JSON-ready snapshot: state, configuration, listeners, groups with their
   * upstreams' health and load, clients with their open connections.
   *
   * @returns A fresh object; later changes do not show in it.
   */
  status(): BalancerStatus {
    const now = this.#clock.now();
    const wall = this.#wall();
    const iso = (monotonic: number): string => new Date(wall - (now - monotonic)).toISOString();
    const groups = [...this.#groups.values()].map((group) => group.status(iso, this.#limiter));
    const clients = clientStates(this.#config, this.#limiter);
    const certificates: BalancerStatus["certificates"] = {};
    const server = this.#certificateExpiry("tls.cert");
    const ca = this.#certificateExpiry("tls.ca");
    if (Number.isFinite(server)) certificates.server = new Date(server).toISOString();
    if (Number.isFinite(ca)) certificates.ca = new Date(ca).toISOString();
    const crlNext = this.#crl?.nextUpdate;
    if (crlNext !== undefined) certificates.crlNextUpdate = crlNext.toISOString();
    const upstreams = upstreamCertificateStatus(this.#tls);
    if (upstreams !== undefined) certificates.upstreams = upstreams;
    const status: BalancerStatus = {
      state: this.#life.state,
      config: { path: this.#config.path, loadedAt: new Date(this.#life.loadedAt).toISOString() },
      connections: {
        open: this.#net.open,
        handshaking: this.#net.handshaking,
        max: this.#caps.maxConnections,
        maxHandshakes: this.#caps.maxHandshakes,
        active: this.counters.active,
        accepted: this.counters.accepted,
        denied: Object.fromEntries(this.counters.denied),
        handshakeFailures: Object.fromEntries(this.counters.handshakeErrors),
        queueTimeouts: this.#limiter.queueTimeouts,
      },
      listeners: this.listeners().map((l, i) => {
        const group = this.#listeners[i]!.group;
        const address = formatHostPort(l.address);
        return group === undefined ? { address } : { address, group };
      }),
      groups,
      clients,
      certificates,
    };

    const { startedAt, lastReload } = this.#life;
    if (startedAt !== undefined) status.startedAt = new Date(startedAt).toISOString();
    if (lastReload !== undefined) status.lastReload = lastReload;
    const policy = this.#clientPolicy?.();
    if (policy !== undefined) status.clientPolicy = policy;
    return status;
  }

  /**
   * Applies a new configuration and TLS material without dropping a connection.
   * Reloads run one at a time, in call order.
   *
   * New connections get the new policy, limits, timeouts, CA, certificate, CRL and
   * groups; live connections keep running with what they started with. Upstreams
   * that stay keep their connection counts and health; new upstreams and groups are
   * probed before the new configuration takes effect, so they are not refused while
   * unknown. Listeners are matched by their configured address: kept ones take the
   * new TLS material (`setSecureContext`), new ones are bound before anything
   * changes, removed ones stop accepting while their connections finish.
   *
   * Not applied without a restart (a warning is logged): `[admin] listen`,
   * `[log]`, `[server] workers` and `watch`, and a listener address switching
   * between the shared listener and a group's own (a reload that does so fails).
   *
   * A failed reload changes nothing, is logged, counted in
   * `mtlb_reloads_total{outcome="failure"}` and reported in
   * {@linkcode Balancer.status}; so is a successful one.
   *
   * @param next The configuration and TLS material, or how to derive them from those
   *   in force when this reload's turn comes; without it, they are read again from the
   *   config file with the `load` option.
   * @returns When the new configuration is in use.
   * @throws {ReloadError} When the balancer is not serving, or the configuration
   *   cannot be read or applied (the cause says why); the old one keeps running.
   */
  reload(next?: ReloadSource): Promise<void> {
    return this.#life.reload(next);
  }

  /**
   * Stops accepting, lets live connections finish for up to `timeout`
   * milliseconds, then closes the rest and everything else, as
   * {@linkcode Balancer.close} does. While it drains, {@linkcode Balancer.state} is
   * `draining` (the admin `/healthz` answers 503). Handshakes already under way
   * are served. Calling it again returns the same drain.
   *
   * @param timeout Milliseconds to wait; `[server] drain_timeout` when omitted.
   * @returns How many connections were closed by force, and how long it took.
   */
  drain(timeout: number = this.#config.server.drainTimeout): Promise<DrainResult> {
    return this.#life.drain(timeout);
  }

  /**
   * Stops listening, ends every live connection and stops the probes.
   *
   * @returns When everything is closed.
   */
  close(): Promise<void> {
    if (!this.#life.closing) this.#openAtClose = this.#net.open;
    return this.#life.close();
  }

  /**
   * Same as {@linkcode Balancer.close}.
   *
   * @returns When everything is closed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #drain(timeout: number): Promise<DrainResult> {
    const started = this.#clock.now();
    if (this.#logLifecycle) {
      log.info(
        `Draining: stopped accepting; {open} ${
          plural(this.#net.open, "connection")
        } open, waiting up to {timeout}`,
        { open: this.#net.open, timeout: formatDuration(timeout) },
      );
    }
    for (const listener of this.#listeners) void this.#net.close(listener);
    this.#runner.refuseQueued();
    if (this.#net.open > 0) {
      this.#stopWaiting = Promise.withResolvers<void>();
      let timer: TimerId | undefined;
      await new Promise<void>((resolve) => {
        timer = this.#clock.setTimeout(resolve, timeout);
        this.#net.idle().then(resolve);
        this.#stopWaiting!.promise.then(resolve);
      });
      this.#clock.clearTimeout(timer!);
    }
    // close() called meanwhile (a second SIGTERM) ended the wait: what it closed was forced.
    const forced = this.#life.closing ? this.#openAtClose : this.#net.open;
    if (forced > 0 && !this.#life.closing) {
      log.warn(`Drain timeout: closing {forced} ${plural(forced, "connection")} still open`, {
        forced,
      });
    }
    await this.close();
    const durationMs = Math.round(this.#clock.now() - started);
    if (this.#logLifecycle) log.info("Drained in {durationMs} ms", { durationMs, forced });
    return { forced, durationMs };
  }

  async #shutdown(): Promise<void> {
    const listeners = this.#listeners.map((l) => this.#net.close(l));
    this.#closing.abort(new Error("Balancer closing"));
    this.#net.abortHandshakes();
    this.#sessions.destroyAll();
    await Promise.all([...listeners, ...this.#retired]);
    await this.#runner.settled();
    await Promise.all([...this.#groups.values()].map((group) => group.close()));
    await Promise.all(this.#retiredProbes);
    this.#collect[Symbol.dispose]();
    this.#collectPolicy?.[Symbol.dispose]();
    this.#stopWaiting?.resolve();
  }

  // -------------------------------------------------------------------------------------
  // Groups

  #newGroup(config: GroupConfig, tls: TlsMaterial = this.#tls): UpstreamGroup {
    const name = config.name;
    let health: GroupHealthSource;
    if (this.#externalHealth) {
      let reports = this.#reports.get(name);
      if (reports === undefined) this.#reports.set(name, reports = new Map());
      health = {
        kind: "external",
        reports,
        onPassive: (record) => this.#emit("passive_health", record),
      };
    } else {
      health = { kind: "probe" };
    }
    return new UpstreamGroup(config, {
      clock: this.#clock,
      metrics: this.#metrics,
      counts: this.#upstreamCounts,
      health,
      resolver: this.#resolver,
      connector: connectorFor(tls.upstreams?.get(name), this.#connectors),
      dnsReports: this.#dnsReports?.of(name),
    });
  }

  #retireGroup(group: UpstreamGroup): void {
    const closing = group.retire();
    this.#retiredProbes.add(closing);
    void closing.then(() => this.#retiredProbes.delete(closing));
  }

  // -------------------------------------------------------------------------------------
  // Reload

  async #apply(config: Config, tls: TlsMaterial): Promise<void> {
    const { trust, crl } = await buildTrust(config, tls, this.#wall());
    const policy = new Policy(config);

    // Listeners: keep those whose address stays, bind the new ones first.
    const wanted = wantedListeners(config);
    const kept = new Map<BoundListener, string | undefined>();
    const added: BoundListener[] = [];
    const order: BoundListener[] = [];
    try {
      for (const { address, group } of wanted) {
        // The same address for the same group; else, on a fixed port, the same address
        // for another group (port 0 binds a new port each time, so it matches only the former).
        const free = this.#listeners.filter((l) => l.address === address && !kept.has(l));
        const old = free.find((l) => l.group === group) ??
          (parseHostPort(address).port === 0 ? undefined : free[0]);
        if (old !== undefined) {
          if ((old.group === undefined) !== (group === undefined)) {
            throw new Error(
              `listener ${address} would change between the shared listener and ${
                group ?? old.group
              }'s own: remove it in one reload and add it back in another, or restart`,
            );
          }
          kept.set(old, group);
          order.push(old);
        } else {
          const listener = await this.#net.listen(address, group, contextOf(config, tls));
          added.push(listener);
          order.push(listener);
        }
      }
    } catch (error) {
      await Promise.all(added.map((l) => this.#net.close(l)));
      throw error;
    }

    // Groups: new ones and new upstreams are probed before they can be picked.
    const newGroups = new Map<string, UpstreamGroup>();
    const probing: Promise<void>[] = [];
    for (const groupConfig of config.groups.values()) {
      const existing = this.#groups.get(groupConfig.name);
      if (existing === undefined) {
        const group = this.#newGroup(groupConfig, tls);
        newGroups.set(groupConfig.name, group);
        probing.push(group.discover().then(() => group.probe.ready));
      } else {
        probing.push(existing.probeTargets(groupConfig));
      }
    }
    const abandon = async (): Promise<void> => {
      for (const group of newGroups.values()) this.#retireGroup(group);
      for (const group of this.#groups.values()) group.discardReload();
      await Promise.all(added.map((l) => this.#net.close(l)));
    };
    // A DNS entry that finds nothing fails the reload, as it fails a start.
    const probed = await Promise.allSettled(probing);
    const failed = probed.find((p) => p.status === "rejected");
    if (failed !== undefined) {
      await abandon();
      throw failed.reason;
    }
    if (this.#life.state !== "serving") {
      await abandon();
      throw new Error(`the balancer started ${this.#life.state} during the reload`);
    }

    // Commit: nothing below waits or fails.
    const previous = this.#config;
    const previousTls = this.#tls;
    this.#config = config;
    this.#tls = tls;
    this.#policy = policy;
    this.#crl = crl;
    this.#trust = trust;
    this.#ciphers = new Set(config.tls.ciphers);
    this.#caps = connectionCaps(config.server, this.#fileDescriptors);
    this.#groupNames = [...config.groups.keys()];
    for (const [name, group] of this.#groups) {
      const groupConfig = config.groups.get(name);
      if (groupConfig === undefined) {
        this.#groups.delete(name);
        this.#retireGroup(group);
        continue;
      }
      group.update(groupConfig);
      group.useConnector(connectorFor(tls.upstreams?.get(name), this.#connectors));
    }
    for (const [name, group] of newGroups) this.#groups.set(name, group);
    // Handshakes from now on use the new CA, certificate and suites; sessions made stay.
    const context = contextOf(config, tls);
    for (const [listener, group] of kept) {
      listener.group = group;
      listener.server.setSecureContext(context);
      this.#net.refresh(listener);
    }
    let removed = 0;
    for (const listener of this.#listeners) {
      if (kept.has(listener)) continue;
      removed++;
      const closing = this.#net.close(listener);
      this.#retired.add(closing);
      void closing.then(() => this.#retired.delete(closing));
      log.info("Stopped listening on {address}; its connections continue", {
        address: listener.address,
      });
    }
    this.#listeners = order;
    this.#recheckSessions(policy);
    this.#sessions.arm();

    if (this.#logLifecycle) logReload(previous, config, previousTls, tls);
  }

  // -------------------------------------------------------------------------------------
  // Metrics

  #updateStaticMetrics(): void {
    const m = this.#metrics;
    m.maxConnections.set(this.#caps.maxConnections);
    m.maxHandshakes.set(this.#caps.maxHandshakes);
    m.configLoaded.set(this.#life.loadedAt / 1000);
    m.expiry.clear();
    const server = this.#certificateExpiry("tls.cert");
    const ca = this.#certificateExpiry("tls.ca");
    if (Number.isFinite(server)) m.expiry.labels("server").set(server / 1000);
    if (Number.isFinite(ca)) m.expiry.labels("ca").set(ca / 1000);
    const crlNext = this.#crl?.nextUpdate;
    if (crlNext !== undefined) m.expiry.labels("crl").set(crlNext.getTime() / 1000);
    setUpstreamExpiry(m.upstreamExpiry, this.#tls);
  }

  /** The server certificate's expiry, or the earliest of the CA bundle, ms since the epoch. */
  #certificateExpiry(key: "tls.cert" | "tls.ca"): number {
    const certs = this.#tls.certificates.filter((c) => c.key === key);
    if (key === "tls.cert") return certs[0]?.notAfter.getTime() ?? NaN;
    return Math.min(...certs.map((c) => c.notAfter.getTime()));
  }

  #collectMetrics(): void {
    const m = this.#metrics;
    m.open.set(this.#net.open);
    m.handshaking.set(this.#net.handshaking);
    m.active.clear();
    m.upstreamHealthy.clear();
    m.probeLatency.clear();
    m.ejected.clear();
    m.panic.clear();
    for (const group of this.#groups.values()) group.collect();
    m.clientActive.clear();
    for (const name of this.#config.clients.keys()) {
      m.clientActive.labels(name).set(this.#limiter.active(name));
    }
    m.queued.set(this.#limiter.queued());
  }

  // -------------------------------------------------------------------------------------
  // Connections

  /**
   * The ALPN protocol selected for a ClientHello: the first protocol the group it asks
   * for declares (`alpn`) that the client offered, else none. A group name is never
   * echoed to a client that has not authenticated yet.
   */
  #selectAlpn(hello: ClientHelloInfo, listenerGroup: string | undefined): string | undefined {
    const name = this.#policy.requestedGroup({
      ...(listenerGroup === undefined ? {} : { listenerGroup }),
      sni: hello.servername,
      alpn: hello.protocols,
    });
    const declared = name === undefined ? undefined : this.#groups.get(name)?.config.alpn;
    return declared?.find((p) => hello.protocols.includes(p));
  }

  /** After a reload: the live connections the trust and policy now in force would refuse. */
  #recheckSessions(policy: Policy): void {
    const context = { trust: this.#trust, policy, now: this.#wall() };
    this.#sessions.recheck(
      ({ socket, client, group }) =>
        readmit({ chain: peerCertificateChain(socket), client, group }, context),
      this.#config.server.onPolicyChange,
    );
  }

  /** Counts and logs a refusal, and dispatches its `"deny"` event. */
  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The secure context of the listeners for a configuration and its TLS material. */
function contextOf(config: Config, tls: TlsMaterial): SecureContextOptions {
  return secureContextOptions(config.tls.ciphers, tls);
}
