/**
 * One `/status` for a `WorkerBalancer`: the workers' statuses summed (connections,
 * groups, clients), the counters of workers that died added back, health, panic
 * and ejections taken from the primary's probes, and each worker's share.
 *
 * @module
 */
import type { Config, GroupConfig } from "../config/mod.ts";
import { formatHostPort } from "../core/address.ts";
import { connectionCaps } from "../listener/connection_caps.ts";
import type { Lifecycle } from "../server/lifecycle.ts";
import {
  addEjection,
  addProbeState,
  type BalancerStatus,
  clientStates,
  type GroupState,
  type ListenerInfo,
  type UpstreamState,
} from "../server/status.ts";
import type { WorkerBalancerStatus, WorkerStatus } from "./status.ts";
import type { PrimaryDns } from "./_primary_dns.ts";
import type { PrimaryHealth } from "./_primary_health.ts";
import { addAll, type Figures, type Retired } from "./_worker_figures.ts";
import type { Slot } from "./_worker_slots.ts";

/** What {@linkcode buildStatus} reads. */
export interface StatusSources {
  /** The running configuration. */
  config: Config;
  /** The life cycle: its state, when the config was loaded, started, last reloaded. */
  life: Pick<Lifecycle, "state" | "loadedAt" | "startedAt" | "lastReload">;
  /** Every worker. */
  slots: readonly Slot[];
  /** The latest figures of each worker that answered. */
  figures: ReadonlyMap<Slot, Figures>;
  /** The counters of the workers that died. */
  retired: Readonly<Retired>;
  /** The primary's probes and outlier detectors. */
  health: PrimaryHealth;
  /** The primary's DNS look-ups. */
  dns: PrimaryDns;
  /** The listeners as the workers bound them, for when no worker answered. */
  listeners: readonly ListenerInfo[];
  /** The open-files limit the default connection caps derive from. */
  fileDescriptorLimit: number | undefined;
  /** Active connections to an upstream, from the shared counts. */
  upstreamActive: (address: string) => number;
  /** The primary's clock, now. */
  now: number;
  /** Wall-clock time now, ms since the epoch. */
  wall: number;
}

/**
 * Merges the workers' statuses into the status of their balancer.
 *
 * @param sources The workers' figures and the primary's state.
 * @returns A fresh object.
 */
export function buildStatus(sources: StatusSources): WorkerBalancerStatus {
  const { config, figures, retired, life, now, wall } = sources;
  const iso = (monotonic: number): string => new Date(wall - (now - monotonic)).toISOString();
  const statuses = [...figures.values()].map((f) => f.status);
  const denied = new Map(retired.denied);
  const handshakeFailures = new Map(retired.handshakeFailures);
  const caps = connectionCaps(config.server, sources.fileDescriptorLimit);
  let open = 0;
  let handshaking = 0;
  let active = 0;
  let accepted = retired.accepted;
  for (const status of statuses) {
    open += status.connections.open;
    handshaking += status.connections.handshaking;
    active += status.connections.active;
    accepted += status.connections.accepted;
    addAll(denied, status.connections.denied);
    addAll(handshakeFailures, status.connections.handshakeFailures);
  }
  const groups = [...config.groups.values()].map((group) =>
    groupState(group, statuses, sources, iso)
  );
  // The workers' counts summed, as one limiter would count them.
  const summed = (figure: "active" | "queued", name: string | undefined): number =>
    statuses.reduce(
      (sum, s) => sum + (s.clients.find((x) => x.name === name)?.[figure] ?? 0),
      0,
    );
  const clients = clientStates(config, {
    active: (name) => summed("active", name),
    queued: (name) => summed("queued", name),
  });
  // Queue timeouts of the workers that died are in their retired counter samples.
  let queueTimeouts = 0;
  for (const s of retired.samples.get("mtlb_limiter_queue_timeouts_total")?.values() ?? []) {
    queueTimeouts += s.value;
  }
  for (const status of statuses) queueTimeouts += status.connections.queueTimeouts;
  const first = statuses[0];
  const status: WorkerBalancerStatus = {
    state: life.state,
    config: { path: config.path, loadedAt: new Date(life.loadedAt).toISOString() },
    connections: {
      open,
      handshaking,
      max: caps.maxConnections,
      maxHandshakes: caps.maxHandshakes,
      active,
      accepted,
      denied: Object.fromEntries(denied),
      handshakeFailures: Object.fromEntries(handshakeFailures),
      queueTimeouts,
    },
    listeners: first?.listeners ??
      sources.listeners.map((l) => {
        const address = formatHostPort(l.address);
        return l.group === undefined ? { address } : { address, group: l.group };
      }),
    groups,
    clients,
    certificates: first === undefined ? {} : { ...first.certificates },
    workers: sources.slots.map((slot) => workerStatus(slot, figures.get(slot))),
  };
  const { startedAt, lastReload } = life;
  if (startedAt !== undefined) status.startedAt = new Date(startedAt).toISOString();
  if (lastReload !== undefined) status.lastReload = lastReload;
  return status;
}

/** One group: the workers' counts summed, health and ejections from the primary. */
function groupState(
  groupConfig: GroupConfig,
  statuses: BalancerStatus[],
  sources: StatusSources,
  iso: (monotonic: number) => string,
): GroupState {
  const { health: primary, retired } = sources;
  const name = groupConfig.name;
  const health = new Map(primary.probe(name)?.snapshot().map((h) => [h.address, h]));
  const outlier = primary.outlier(name);
  const outliers = new Map(outlier?.snapshot().map((o) => [o.address, o]));
  const past = retired.groups.get(name);
  const entry: GroupState = {
    name,
    accepted: past?.accepted ?? 0,
    panic: primary.panic(groupConfig),
    bytesFromClient: past?.bytesFromClient ?? 0,
    bytesFromUpstream: past?.bytesFromUpstream ?? 0,
    upstreams: [],
    open: 0,
  };
  if (groupConfig.maxConnections !== undefined) entry.maxConnections = groupConfig.maxConnections;
  const upstreams = new Map<string, UpstreamState>();
  for (const status of statuses) {
    const group = status.groups.find((g) => g.name === name);
    if (group === undefined) continue;
    entry.accepted += group.accepted;
    entry.bytesFromClient += group.bytesFromClient;
    entry.bytesFromUpstream += group.bytesFromUpstream;
    entry.open += group.open;
    for (const u of group.upstreams) {
      const seen = upstreams.get(u.address);
      if (seen === undefined) upstreams.set(u.address, { ...u });
      else seen.accepted += u.accepted;
    }
  }
  // Configured upstreams first, then those DNS found, then removed ones some worker
  // still forwards to.
  const current = new Map(sources.dns.upstreams(groupConfig).map((u) => [u.address, u]));
  const from = sources.dns.sources(groupConfig);
  const order = [...current.keys(), ...[...upstreams.keys()].filter((a) => !current.has(a))];
  for (const address of order) {
    const seen = upstreams.get(address);
    const configured = current.get(address);
    const removed = configured === undefined;
    const h = removed ? undefined : health.get(address);
    const state: UpstreamState = {
      address,
      weight: configured?.weight ?? seen?.weight ?? 1,
      active: seen?.active ?? sources.upstreamActive(address),
      accepted: seen?.accepted ?? 0,
      healthy: !removed && h?.state === "healthy",
      state: removed ? "removed" : h?.state ?? "unknown",
    };
    if (removed) state.removed = true;
    const source = from.get(address);
    if (source !== undefined) state.source = source;
    addProbeState(state, h, iso);
    if (!removed) addEjection(state, outliers.get(address), iso);
    entry.upstreams.push(state);
  }
  if (groupConfig.listen !== undefined) entry.listen = groupConfig.listen;
  if (groupConfig.proxyProtocol !== undefined) entry.proxyProtocol = "v2";
  const dns = sources.dns.status(name, iso);
  if (dns !== undefined) entry.dns = dns;
  return entry;
}

/** One worker's life and share of the connections. */
function workerStatus(slot: Slot, figures: Figures | undefined): WorkerStatus {
  const worker: WorkerStatus = {
    index: slot.index,
    state: slot.state,
    restarts: slot.restarts,
  };
  if (slot.startedWall !== undefined) {
    worker.startedAt = new Date(slot.startedWall).toISOString();
  }
  const own = figures?.status.connections;
  if (own !== undefined) {
    worker.connections = { open: own.open, active: own.active, accepted: own.accepted };
  }
  return worker;
}
