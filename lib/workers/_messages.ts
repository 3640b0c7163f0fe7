/**
 * The messages between the primary of a `WorkerBalancer` and its workers, and how an
 * error crosses between them.
 *
 * @module
 */
import type { LoadedConfig } from "../server/lifecycle.ts";
import type {
  DenyRecord,
  DnsReport,
  HandshakeErrorRecord,
  HealthReport,
  PassiveHealthRecord,
} from "../server/records.ts";
import type { BalancerStatus, DrainResult, ListenerInfo } from "../server/status.ts";
import type { SharedStateInit } from "./shared_state.ts";
import type { WorkerLogging } from "./worker_logging.ts";

/** Health reports by group name, as the primary's probes see them. */
export type GroupHealthReports = Record<string, HealthReport[]>;

/** The upstreams of the DNS entries by group name, as the primary's look-ups found them. */
export type GroupDnsReports = Record<string, DnsReport>;

/** An error as it crosses a thread: its name, message and the fields of a bind error. */
export interface ErrorInfo {
  /** The error's name, such as `Error` or `NotCapable`. */
  name: string;
  /** Its message. */
  message: string;
  /** A system error code, such as `EADDRINUSE`. */
  code?: string;
  /** The address of a bind error. */
  address?: string;
  /** The port of a bind error. */
  port?: number;
}

/**
 * An error as it can cross a thread (a structured clone keeps neither its class nor
 * its extra fields): its name, message, and the `code`, `address` and `port` of a
 * bind error.
 *
 * @param error Whatever was thrown.
 * @returns Its description.
 */
export function errorInfo(error: unknown): ErrorInfo {
  if (!(error instanceof Error)) return { name: "Error", message: String(error) };
  const info: ErrorInfo = { name: error.name, message: error.message };
  const { code, address, port } = error as { code?: unknown; address?: unknown; port?: unknown };
  if (typeof code === "string") info.code = code;
  if (typeof address === "string") info.address = address;
  if (typeof port === "number") info.port = port;
  return info;
}

/**
 * An error from another thread, with the fields `bindFailure` and callers look at.
 *
 * @param info What {@linkcode errorInfo} made of it.
 * @returns An `Error` with that name, message, `code`, `address` and `port`.
 */
export function errorFrom(info: ErrorInfo): Error {
  const error = new Error(info.message) as Error & {
    code?: string;
    address?: string;
    port?: number;
  };
  error.name = info.name;
  if (info.code !== undefined) error.code = info.code;
  if (info.address !== undefined) error.address = info.address;
  if (info.port !== undefined) error.port = info.port;
  return error;
}

/** Messages from the primary to a Worker. */
export type ToWorker =
  | {
    type: "start";
    /** The worker's number, from 1. */
    index: number;
    /** The configuration (listeners on port 0 already resolved) and TLS material. */
    loaded: LoadedConfig;
    shared: SharedStateInit;
    /** This worker's {@linkcode WorkerLedger} memory. */
    ledger: SharedArrayBuffer;
    /** One 32-bit word: the open client connections of every worker. */
    connections: SharedArrayBuffer;
    /** The open-files limit the default connection caps derive from. */
    fileDescriptorLimit: number | undefined;
    /** How many workers share the listeners (each takes its share of `max_handshakes`). */
    workers: number;
    health: GroupHealthReports;
    /** The upstreams of the DNS entries. */
    dns: GroupDnsReports;
    /** The primary's count of upstream sets sent, answered in `started`. */
    epoch: number;
    /** How to configure LogTape in the Worker; no logging without it. */
    logging: WorkerLogging | undefined;
    /** Where `collect` answers go, read synchronously by the primary. */
    reply: MessagePort;
    /** One 32-bit word set to 1 (and notified) after each `collect` answer. */
    flag: SharedArrayBuffer;
  }
  | { type: "health"; group: string; report: HealthReport }
  | {
    /** A DNS entry of the group found another set: apply it, then answer `dns_applied`. */
    type: "dns";
    epoch: number;
    group: string;
    report: DnsReport;
    /** The shared slots, new addresses included. */
    shared: SharedStateInit;
  }
  | {
    type: "reload";
    id: number;
    epoch: number;
    loaded: LoadedConfig;
    shared: SharedStateInit;
    health: GroupHealthReports;
    dns: GroupDnsReports;
  }
  | { type: "drain"; timeout: number }
  | { type: "close" }
  | { type: "collect"; id: number };

/** A refusal or failed handshake of a worker, relayed to the primary for `/denials`. */
export type RelayedEvent =
  | { type: "deny"; record: DenyRecord }
  | { type: "handshake_error"; record: HandshakeErrorRecord };

/** Messages from a Worker to the primary. */
export type FromWorker =
  | { type: "started"; epoch: number; listeners: ListenerInfo[] }
  | { type: "failed"; error: ErrorInfo }
  | { type: "reloaded"; id: number; epoch: number; listeners: ListenerInfo[]; error?: string }
  | { type: "dns_applied"; epoch: number }
  | { type: "passive"; record: PassiveHealthRecord }
  | { type: "denials"; records: RelayedEvent[] }
  | { type: "draining" }
  | { type: "drained"; result: DrainResult }
  | { type: "closed" };

/** The answer to `collect`, on the reply port. */
export interface CollectReply {
  /** The `collect` message's id. */
  id: number;
  /** The worker balancer's status; absent before it started. */
  status?: BalancerStatus;
  /** Its metrics, rendered. */
  metrics?: string;
}
