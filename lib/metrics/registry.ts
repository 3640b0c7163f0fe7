/**
 * A small Prometheus metrics registry: counters and gauges with label sets,
 * rendered in the Prometheus text exposition format (version 0.0.4).
 *
 * Hot paths hold on to a series (`family.labels("cache")`) and call `inc()` on it:
 * one addition, no string building. Values that live elsewhere (pool counts, health
 * states) are copied into gauges by a {@linkcode MetricsRegistry.onCollect} hook
 * just before rendering, so they cost nothing between scrapes.
 *
 * @module
 */

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Separates label values in a series key; it cannot appear in a rendered series. */
const KEY_SEPARATOR = "\u0000";

/** What a metric family is: a monotonic counter or a gauge that goes up and down. */
export type MetricType = "counter" | "gauge";

/** Options of {@linkcode MetricsRegistry.counter} and {@linkcode MetricsRegistry.gauge}. */
export interface MetricOptions {
  /** The metric name, such as `mtlb_connections_accepted_total`. */
  name: string;
  /** One line of help text for `# HELP`. */
  help: string;
  /**
   * The label names every series of the family carries, in order.
   *
   * @default {[]}
   */
  labelNames?: readonly string[];
}

/** One labelled series of a counter: it only goes up. */
export interface CounterSeries {
  /** The current value. */
  readonly value: number;
  /**
   * Adds to the value.
   *
   * @param amount A non-negative finite number, 1 when omitted.
   * @throws {RangeError} When `amount` is negative or not finite.
   */
  inc(amount?: number): void;
}

/** One labelled series of a gauge: a value that goes up and down. */
export interface GaugeSeries {
  /** The current value. */
  readonly value: number;
  /**
   * Sets the value.
   *
   * @param value Any number (`NaN` and infinities are rendered as Prometheus spells them).
   */
  set(value: number): void;
  /**
   * Adds to the value.
   *
   * @param amount The amount, 1 when omitted.
   */
  inc(amount?: number): void;
  /**
   * Subtracts from the value.
   *
   * @param amount The amount, 1 when omitted.
   */
  dec(amount?: number): void;
}

class Series implements CounterSeries, GaugeSeries {
  value = 0;
  readonly #counter: boolean;
  /** `{a="x",b="y"}`, or `""` without labels: built once, when the series is created. */
  readonly rendered: string;

  constructor(counter: boolean, rendered: string) {
    this.#counter = counter;
    this.rendered = rendered;
  }

  inc(amount = 1): void {
    if (this.#counter && !(amount >= 0 && amount !== Infinity)) {
      throw new RangeError(
        `Cannot increment counter: amount must be a non-negative finite number, received ${amount}`,
      );
    }
    this.value += amount;
  }

  set(value: number): void {
    this.value = value;
  }

  dec(amount = 1): void {
    this.value -= amount;
  }
}

/**
 * A metric family: one name, one help text, one series per distinct set of label
 * values. Get a series with {@linkcode MetricFamily.labels} once and keep it.
 *
 * @example Usage
 * ```ts
 * import { MetricsRegistry } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const active = new MetricsRegistry().gauge({
 *   name: "app_active",
 *   help: "Active jobs.",
 *   labelNames: ["queue"],
 * });
 * const mail = active.labels("mail");
 * mail.inc();
 * mail.inc();
 * mail.dec();
 * assert.equal(active.get("mail"), 1);
 * active.remove("mail");
 * assert.equal(active.get("mail"), undefined);
 * ```
 *
 * @typeParam S The series type: {@linkcode CounterSeries} or {@linkcode GaugeSeries}.
 */
export class MetricFamily<S extends CounterSeries | GaugeSeries> {
  /** The metric name. */
  readonly name: string;
  /** The help text. */
  readonly help: string;
  /** `counter` or `gauge`. */
  readonly type: MetricType;
  /** The label names, in order. */
  readonly labelNames: readonly string[];
  #series = new Map<string, Series>();

  /**
   * Creates a family; use {@linkcode MetricsRegistry.counter} or
   * {@linkcode MetricsRegistry.gauge} to have it rendered.
   *
   * @param type `counter` or `gauge`.
   * @param options Name, help and label names.
   * @throws {TypeError} When the name or a label name is not valid Prometheus, or a
   *   label name repeats.
   */
  constructor(type: MetricType, options: MetricOptions) {
    const { name, help } = options;
    const labelNames = options.labelNames ?? [];
    if (!METRIC_NAME.test(name)) {
      throw new TypeError(
        `Cannot create metric: name must match ${METRIC_NAME.source}, received ${
          JSON.stringify(name)
        }`,
      );
    }
    for (const [i, label] of labelNames.entries()) {
      if (!LABEL_NAME.test(label) || label.startsWith("__")) {
        throw new TypeError(
          `Cannot create metric ${name}: label names must match ${LABEL_NAME.source} and not start with "__", received ${
            JSON.stringify(label)
          }`,
        );
      }
      if (labelNames.indexOf(label) !== i) {
        throw new TypeError(`Cannot create metric ${name}: label "${label}" repeats`);
      }
    }
    this.name = name;
    this.help = help;
    this.type = type;
    this.labelNames = Object.freeze([...labelNames]);
  }

  /**
   * The series for these label values, created at 0 on first use. Call it when a
   * configuration is loaded and keep the series; it is not meant for hot paths.
   *
   * @param values One value per label name, in order.
   * @returns The series.
   * @throws {TypeError} When the number of values differs from the number of labels.
   */
  labels(...values: string[]): S {
    const key = this.#key(values);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new Series(this.type === "counter", renderLabels(this.labelNames, values));
      this.#series.set(key, series);
    }
    return series as unknown as S;
  }

  /**
   * Removes the series for these label values (a group or client removed by a
   * reload). A series held elsewhere keeps counting but is no longer rendered.
   *
   * @param values One value per label name, in order.
   * @returns Whether the series existed.
   * @throws {TypeError} When the number of values differs from the number of labels.
   */
  remove(...values: string[]): boolean {
    return this.#series.delete(this.#key(values));
  }

  /** Removes every series. */
  clear(): void {
    this.#series.clear();
  }

  /**
   * The value of a series, for tests and status pages.
   *
   * @param values One value per label name, in order.
   * @returns The value, or `undefined` when the series does not exist.
   * @throws {TypeError} When the number of values differs from the number of labels.
   */
  get(...values: string[]): number | undefined {
    return this.#series.get(this.#key(values))?.value;
  }

  /**
   * Renders the family: `# HELP`, `# TYPE`, then one line per series in creation
   * order. A family without labels always renders its single series.
   *
   * @returns The text, each line ending in a newline.
   */
  render(): string {
    if (this.labelNames.length === 0) this.labels();
    let text = `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
    for (const series of this.#series.values()) {
      text += `${this.name}${series.rendered} ${formatValue(series.value)}\n`;
    }
    return text;
  }

  #key(values: readonly string[]): string {
    if (values.length !== this.labelNames.length) {
      throw new TypeError(
        `Cannot select a series of ${this.name}: expected ${this.labelNames.length} label values (${
          this.labelNames.join(", ")
        }), received ${values.length}`,
      );
    }
    return values.join(KEY_SEPARATOR);
  }
}

/**
 * Metric families and the hooks that refresh them, rendered together for a
 * `/metrics` endpoint.
 *
 * @example Usage
 * ```ts
 * import { MetricsRegistry } from "@mtlb/mtlb";
 * import assert from "node:assert/strict";
 *
 * const registry = new MetricsRegistry();
 * const accepted = registry.counter({
 *   name: "app_requests_total",
 *   help: "Requests served.",
 *   labelNames: ["route"],
 * });
 * const home = accepted.labels("/"); // resolved once, kept for the hot path
 * home.inc();
 * home.inc();
 * let depth = 0;
 * const queue = registry.gauge({ name: "app_queue_depth", help: "Jobs waiting." });
 * registry.onCollect(() => queue.labels().set(depth));
 * depth = 3;
 * const text = registry.render();
 * assert.match(text, /^app_requests_total\{route="\/"\} 2$/m);
 * assert.match(text, /^app_queue_depth 3$/m);
 * assert.match(text, /^# TYPE app_queue_depth gauge$/m);
 * ```
 */
export class MetricsRegistry {
  #families = new Map<string, MetricFamily<CounterSeries> | MetricFamily<GaugeSeries>>();
  #hooks = new Set<() => void>();

  /**
   * Registers a counter family.
   *
   * @param options Name, help and label names.
   * @returns The family.
   * @throws {TypeError} When the name is taken or a name is not valid Prometheus.
   */
  counter(options: MetricOptions): MetricFamily<CounterSeries> {
    return this.#register(new MetricFamily<CounterSeries>("counter", options));
  }

  /**
   * Registers a gauge family.
   *
   * @param options Name, help and label names.
   * @returns The family.
   * @throws {TypeError} When the name is taken or a name is not valid Prometheus.
   */
  gauge(options: MetricOptions): MetricFamily<GaugeSeries> {
    return this.#register(new MetricFamily<GaugeSeries>("gauge", options));
  }

  /**
   * The family registered under `name`.
   *
   * @param name The metric name.
   * @returns The family, or `undefined`.
   */
  family(name: string): MetricFamily<CounterSeries> | MetricFamily<GaugeSeries> | undefined {
    return this.#families.get(name);
  }

  /**
   * Adds a hook that runs at the start of every {@linkcode MetricsRegistry.render},
   * to copy values kept elsewhere into gauges.
   *
   * @param hook The hook; an error it throws propagates out of `render`.
   * @returns A handle whose disposal removes the hook.
   */
  onCollect(hook: () => void): Disposable {
    this.#hooks.add(hook);
    return { [Symbol.dispose]: () => void this.#hooks.delete(hook) };
  }

  /**
   * Runs the collect hooks, then renders every family in registration order in
   * the Prometheus text format, version 0.0.4
   * (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
   *
   * @returns The exposition text.
   */
  render(): string {
    for (const hook of this.#hooks) hook();
    let text = "";
    for (const family of this.#families.values()) text += family.render();
    return text;
  }

  #register<F extends MetricFamily<CounterSeries> | MetricFamily<GaugeSeries>>(family: F): F {
    if (this.#families.has(family.name)) {
      throw new TypeError(`Cannot register metric: ${family.name} is already registered`);
    }
    this.#families.set(family.name, family);
    return family;
  }
}

function renderLabels(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return "";
  const pairs = names.map((name, i) => `${name}="${escapeLabelValue(String(values[i]))}"`);
  return `{${pairs.join(",")}}`;
}

function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function escapeHelp(help: string): string {
  return help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
