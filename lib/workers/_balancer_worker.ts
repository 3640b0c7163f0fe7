/**
 * The Worker entry of a `WorkerBalancer`: one {@linkcode Balancer} per Worker,
 * serving the same listeners as its siblings (`reusePort`), counting connections
 * and client limits in the primary's `SharedState`, with the health the primary
 * probes and the ejections it decides. Loaded only with `new Worker(...)`; the
 * messages it understands and sends are `ToWorker` and `FromWorker` (`_messages.ts`).
 *
 * The upstreams of DNS entries are those the primary looks up and relays (`dns`
 * messages), applied in order with starts and reloads.
 *
 * Nothing here runs per connection: the Worker posts a message only for a passive
 * health signal (a failed dial, a reset before any byte, and the successes that end
 * a streak of them), a batch of refusals (at most four a second), and in answer to
 * the primary.
 *
 * @module
 */
import { Balancer } from "../server/balancer.ts";

import type { DenyRecord, HandshakeErrorRecord, PassiveHealthRecord } from "../server/records.ts";
import { SharedState } from "./shared_state.ts";
import { configureLogging } from "../control/logging.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import {
  type CollectReply,
  errorInfo,
  type FromWorker,
  type GroupDnsReports,
  type GroupHealthReports,
  type RelayedEvent,
  type ToWorker,
} from "./_messages.ts";
import { type SharedCount, WorkerLedger } from "./ledger.ts";

/** Refusals kept for one batch; the primary keeps as many for `/denials`. */
const DENIAL_BATCH = 100;
/** How often a batch of refusals may be posted, ms. */
const DENIAL_INTERVAL = 250;

/**
 * Milliseconds on one time base in every Worker of the process, as the shared
 * token buckets need (each Worker's `performance.now()` has its own origin).
 */
const PROCESS_CLOCK: Clock = {
  now: (): number => performance.timeOrigin + performance.now(),
  setTimeout: systemClock.setTimeout,
  clearTimeout: systemClock.clearTimeout,
};

interface WorkerScope {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker): void;
}

const scope = globalThis as unknown as WorkerScope;
let balancer: Balancer | undefined;
/** The balancer health reports go to: set as soon as it exists, before it starts. */
let healthTarget: Balancer | undefined;
let state: SharedState | undefined;
let ledger: WorkerLedger | undefined;
let logging: AsyncDisposable | undefined;
let reply: MessagePort | undefined;
let flag: Int32Array | undefined;
let denials: RelayedEvent[] = [];
let denialTimer: ReturnType<typeof setTimeout> | undefined;

// One message at a time, in order: a reload or drain waits for the start before it.
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (event) => {
  const message = event.data;
  if (message.type === "collect") return collect(message.id);
  if (message.type === "health") {
    healthTarget?.setHealth(message.group, message.report);
    return;
  }
  // A close cuts a drain in progress short (a second SIGTERM): it must not wait in the
  // queue behind that drain. Closing the balancer ends the drain, whose "drained" reply
  // then goes out before the queued close answers "closed".
  if (message.type === "close") void balancer?.close();
  // An unexpected error is not caught: the Worker dies and the primary restarts it.
  queue = queue.then(() => handle(message));
};

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case "start":
      return await start(message);
    case "dns":
      // After the start and reloads before it: the ledger and pools see the new slots
      // before any pool can pick a new address.
      state?.update(message.shared);
      ledger?.update(message.shared);
      balancer?.setDnsUpstreams(message.group, message.report);
      post({ type: "dns_applied", epoch: message.epoch });
      return;
    case "reload": {
      const running = balancer!;
      const { id, epoch } = message;
      state!.update(message.shared);
      ledger!.update(message.shared);
      // DNS sets first: applying them forgets the health of upstreams that left.
      applyDns(running, message.dns);
      applyHealth(running, message.health);
      try {
        await running.reload(message.loaded);
        post({ type: "reloaded", id, epoch, listeners: running.listeners() });
      } catch (error) {
        const listeners = running.listeners();
        post({ type: "reloaded", id, epoch, listeners, error: reloadFailure(error) });
      }
      return;
    }
    case "drain": {
      // drain() stops accepting before it returns its promise: say so at once.
      const draining = balancer?.drain(message.timeout);
      post({ type: "draining" });
      const result = draining === undefined ? { forced: 0, durationMs: 0 } : await draining;
      await stop();
      post({ type: "drained", result });
      return;
    }
    case "close":
      await balancer?.close();
      await stop();
      post({ type: "closed" });
      return;
  }
}

async function start(message: Extract<ToWorker, { type: "start" }>): Promise<void> {
  if (message.logging !== undefined) {
    // Records of a worker say which: its primary logs what concerns them all.
    logging = await configureLogging({ ...message.logging, properties: { worker: message.index } });
  }
  reply = message.reply;
  flag = new Int32Array(message.flag);
  state = SharedState.attach(message.shared);
  ledger = new WorkerLedger(message.ledger, message.shared);
  const candidate = new Balancer({
    config: message.loaded.config,
    tls: message.loaded.tls,
    clock: PROCESS_CLOCK,
    limiterStore: ledger.store(state.limiterStore()),
    bandwidthStore: state.bandwidthStore(),
    upstreamCounts: ledger.counts(state.upstreamCounts()),
    connectionCount: ledger.connections(sharedCount(new Int32Array(message.connections))),
    reusePort: true,
    ...(message.fileDescriptorLimit === undefined
      ? {}
      : { fileDescriptorLimit: message.fileDescriptorLimit }),
    handshakeShare: 1 / message.workers,
    logLifecycle: false,
    health: "external",
    dns: "external",
    load: () => Promise.reject(new Error("a worker reloads only what its primary sends")),
  });
  applyDns(candidate, message.dns);
  applyHealth(candidate, message.health);
  healthTarget = candidate;
  candidate.addEventListener("passive_health", (event) => {
    post({ type: "passive", record: (event as CustomEvent<PassiveHealthRecord>).detail });
  });
  candidate.addEventListener("deny", (event) => {
    queueDenial({ type: "deny", record: (event as CustomEvent<DenyRecord>).detail });
  });
  candidate.addEventListener("handshake_error", (event) => {
    const record = (event as CustomEvent<HandshakeErrorRecord>).detail;
    queueDenial({ type: "handshake_error", record });
  });
  try {
    await candidate.start();
  } catch (error) {
    await candidate.close();
    post({ type: "failed", error: errorInfo(error) });
    await stop();
    return;
  }
  balancer = candidate;
  post({ type: "started", epoch: message.epoch, listeners: candidate.listeners() });
}

function applyDns(target: Balancer, dns: GroupDnsReports): void {
  for (const [group, report] of Object.entries(dns)) target.setDnsUpstreams(group, report);
}

function applyHealth(target: Balancer, health: GroupHealthReports): void {
  for (const [group, reports] of Object.entries(health)) {
    for (const report of reports) target.setHealth(group, report);
  }
}

/** Answers `collect` at once: the primary waits on the flag, it cannot read a message. */
function collect(id: number): void {
  const answer: CollectReply = balancer === undefined
    ? { id }
    : { id, status: balancer.status(), metrics: balancer.metrics.render() };
  reply?.postMessage(answer);
  if (flag !== undefined) {
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  }
}

function queueDenial(record: RelayedEvent): void {
  denials.push(record);
  if (denials.length > DENIAL_BATCH) denials.shift();
  denialTimer ??= setTimeout(flushDenials, DENIAL_INTERVAL);
}

function flushDenials(): void {
  if (denialTimer !== undefined) clearTimeout(denialTimer);
  denialTimer = undefined;
  if (denials.length === 0) return;
  const records = denials;
  denials = [];
  post({ type: "denials", records });
}

/** Sends what is pending and stops logging; the primary terminates the Worker next. */
async function stop(): Promise<void> {
  flushDenials();
  await logging?.[Symbol.asyncDispose]();
  logging = undefined;
}

function sharedCount(word: Int32Array): SharedCount {
  return { add: (delta: number): number => Atomics.add(word, 0, delta) + delta };
}

function post(message: FromWorker): void {
  scope.postMessage(message);
}

/** The reason of a failed reload, without the `Cannot reload:` the primary adds again. */
function reloadFailure(error: unknown): string {
  const cause = error instanceof Error ? error.cause ?? error : error;
  return cause instanceof Error ? cause.message : String(cause);
}
