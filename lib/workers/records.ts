/**
 * The records a `WorkerBalancer` dispatches as events of its workers' lives: a
 * worker died (`"worker_exit"`), a worker (re)started serving (`"worker_start"`).
 *
 * @module
 */
import type { ReleasedSlots } from "./ledger.ts";

/** Detail of a `"worker_exit"` event: a worker died. */
export interface WorkerExitRecord {
  /** The worker's number, from 1. */
  index: number;
  /** Why it died. */
  error: string;
  /** What it held that was given back: upstream leases, client slots, open connections. */
  released: ReleasedSlots;
  /** When it is restarted, ms from now; absent when it is not (the balancer is stopping). */
  restartInMs?: number;
}

/** Detail of a `"worker_start"` event: a worker (re)started serving. */
export interface WorkerStartRecord {
  /** The worker's number, from 1. */
  index: number;
  /** How many times it was restarted. */
  restarts: number;
}
