/**
 * A small Prometheus metrics registry.
 *
 * @module
 */
export {
  type CounterSeries,
  type GaugeSeries,
  MetricFamily,
  type MetricOptions,
  MetricsRegistry,
  type MetricType,
} from "./registry.ts";
