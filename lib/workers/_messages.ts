/**
 * The messages between the primary of a `WorkerBalancer` and its workers.
 *
 * @module
 */
import type { LoadedConfig } from "../server/lifecycle.ts";
import type {
  DenyRecord,
  HandshakeErrorRecord,
  HealthReport,
  PassiveHealthRecord,
} from "../server/records.ts";
import type { BalancerStatus, DrainResult, ListenerInfo } from "../server/status.ts";
import type { SharedStateInit } from "./shared_state.ts";
import type { WorkerLogging } from "./worker_logging.ts";

/** Health reports by group name, as the primary's probes see them. */
export type GroupHealthReports = Record<string, HealthReport[]>;

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
    /** How to configure LogTape in the Worker; no logging without it. */
    logging: WorkerLogging | undefined;
    /** Where `collect` answers go, read synchronously by the primary. */
    reply: MessagePort;
    /** One 32-bit word set to 1 (and notified) after each `collect` answer. */
    flag: SharedArrayBuffer;
  }
  | { type: "health"; group: string; report: HealthReport }
  | {
    type: "reload";
    id: number;
    loaded: LoadedConfig;
    shared: SharedStateInit;
    health: GroupHealthReports;
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
  | { type: "started"; listeners: ListenerInfo[] }
  | { type: "failed"; error: ErrorInfo }
  | { type: "reloaded"; id: number; listeners: ListenerInfo[]; error?: string }
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
