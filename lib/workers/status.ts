/**
 * The status of a `WorkerBalancer`: a balancer's status summed over its workers,
 * and each worker's life.
 *
 * @module
 */
import type { BalancerStatus } from "../server/status.ts";

/** The life of one worker. */
export type WorkerLifeState = "starting" | "serving" | "restarting" | "draining" | "closed";

/** One worker in {@linkcode WorkerBalancerStatus}. */
export interface WorkerStatus {
  /** The worker's number, from 1. */
  index: number;
  /** Its state. */
  state: WorkerLifeState;
  /** How many times it was restarted after dying. */
  restarts: number;
  /** When its current thread started serving, ISO 8601. */
  startedAt?: string;
  /** Its share of the connections, when it answered. */
  connections?: { open: number; active: number; accepted: number };
}

/** The status of a `WorkerBalancer`: the sum over its workers, and each worker. */
export interface WorkerBalancerStatus extends BalancerStatus {
  /** The workers. */
  workers: WorkerStatus[];
}
