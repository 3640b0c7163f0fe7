/**
 * Building blocks of a layer-4 load balancer.
 * @module
 */
export { type Clock, FakeClock, systemClock, type TimerId } from "./lib/clock.ts";
export { formatDuration, parseDuration } from "./lib/duration.ts";
