/**
 * Reads back the Prometheus text exposition a `MetricsRegistry` renders: how the
 * primary of a `WorkerBalancer` sums its workers' metrics.
 *
 * @module
 */

/** One series of a family: its label values, in label order, and its value. */
export interface Sample {
  /** The label values. */
  labels: string[];
  /** The value. */
  value: number;
}

/**
 * Reads the samples of a Prometheus text exposition as `MetricsRegistry.render`
 * writes it: per family name, each series' label values (in label order) and value.
 *
 * @example Usage
 * ```ts
 * import { parseSamples } from "./prometheus_text.ts";
 * import assert from "node:assert/strict";
 *
 * const samples = parseSamples(
 *   '# TYPE a counter\na{group="x \\"y\\"",upstream="h:1"} 3\nb +Inf\n',
 * );
 * assert.deepEqual(samples.get("a"), [{ labels: ['x "y"', "h:1"], value: 3 }]);
 * assert.deepEqual(samples.get("b"), [{ labels: [], value: Infinity }]);
 * ```
 *
 * @param text The exposition.
 * @returns The samples by family name, in order.
 */
export function parseSamples(text: string): Map<string, Sample[]> {
  const samples = new Map<string, Sample[]>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const brace = line.indexOf("{");
    const space = line.lastIndexOf(" ");
    const name = line.slice(0, brace >= 0 && brace < space ? brace : space);
    const labels: string[] = [];
    if (brace >= 0 && brace < space) {
      let i = brace + 1;
      while (line[i] !== "}") {
        i = line.indexOf('"', i) + 1;
        let value = "";
        for (; line[i] !== '"'; i++) {
          if (line[i] === "\\") {
            i++;
            value += line[i] === "n" ? "\n" : line[i];
          } else {
            value += line[i];
          }
        }
        labels.push(value);
        i++;
        if (line[i] === ",") i++;
      }
    }
    const raw = line.slice(space + 1);
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    let list = samples.get(name);
    if (list === undefined) samples.set(name, list = []);
    list.push({ labels, value });
  }
  return samples;
}
