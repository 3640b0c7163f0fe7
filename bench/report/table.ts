/**
 * The tables of a run: the medians of every figure with the ratios and bars, and every
 * round's values.
 *
 * @module
 */
import type { Samples } from "./samples.ts";

/** One row of the table: a figure for an mtlb target against a HAProxy target. */
export interface Row {
  metric: string;
  label: string;
  unit: string;
  higherIsBetter: boolean;
  digits: number;
  /** The goal on mtlb/HAProxy, if any. */
  bar?: number;
  mtlb: string;
  haproxy: string;
  /** The Deno floor's target label, when it ran this figure. */
  floor?: string;
  /** The baseline's target label (another mtlb checkout), when one ran this figure. */
  baseline?: string;
  /** Metric and target of a plaintext-direct reference value. */
  direct?: [string, string];
}

/**
 * A figure as printed: grouped thousands, a fixed number of decimals, "n/a" for none.
 *
 * @param value The figure.
 * @param digits Decimals.
 * @returns The text.
 */
export function format(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A ratio, or undefined where it means nothing (a figure zero or negative: an added latency below noise). */
function ratioOf(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && a > 0 && b > 0 ? a / b : undefined;
}

/**
 * The lowest and highest ratio `a/b` of the values of one round, over the rounds: how
 * far one round's comparison can stray, since both ran in turn in each round.
 */
function roundRatios(a: readonly number[], b: readonly number[]): string {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const ratio = ratioOf(a[i], b[i]);
    if (ratio !== undefined) ratios.push(ratio);
  }
  if (ratios.length === 0) return "n/a";
  const low = Math.min(...ratios).toFixed(2);
  const high = Math.max(...ratios).toFixed(2);
  return low === high ? low : `${low}–${high}`;
}

/**
 * The table of medians (Markdown): each figure for mtlb, HAProxy and the floor, their
 * ratios, the bar and whether it was met, and the plaintext reference. When a row has
 * a baseline (another mtlb checkout), its figure, mtlb/baseline and the range of that
 * ratio over the rounds come after mtlb's.
 *
 * @param rows The figures.
 * @param samples The values measured.
 * @returns The table.
 */
export function table(rows: readonly Row[], samples: Samples): string {
  const withBaseline = rows.some((row) => row.baseline !== undefined);
  const lines = withBaseline
    ? [
      "| figure | unit | mtlb | mtlb (baseline) | mtlb/baseline | per round | HAProxy | mtlb/HAProxy | bar | met | Deno floor | floor/HAProxy | direct (plaintext) |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    : [
      "| figure | unit | mtlb | HAProxy | mtlb/HAProxy | bar | met | Deno floor | floor/HAProxy | direct (plaintext) |",
      "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ];
  for (const row of rows) {
    const m = samples.median(row.metric, row.mtlb);
    const h = samples.median(row.metric, row.haproxy);
    const f = row.floor === undefined ? undefined : samples.median(row.metric, row.floor);
    const ratio = ratioOf(m, h);
    const floorRatio = ratioOf(f, h);
    const bar = row.bar === undefined
      ? ""
      : `${row.higherIsBetter ? ">=" : "<="} ${row.bar.toFixed(1)}`;
    const met = row.bar === undefined || ratio === undefined
      ? ""
      : (row.higherIsBetter ? ratio >= row.bar : ratio <= row.bar)
      ? "yes"
      : "no";
    const direct = row.direct ? format(samples.median(...row.direct), row.digits) : "";
    let baseline = "";
    if (withBaseline) {
      const b = row.baseline === undefined ? undefined : samples.median(row.metric, row.baseline);
      const versus = ratioOf(m, b);
      const perRound = row.baseline === undefined
        ? "n/a"
        : roundRatios(samples.get(row.metric, row.mtlb), samples.get(row.metric, row.baseline));
      baseline = ` ${format(b, row.digits)} | ${
        versus === undefined ? "n/a" : versus.toFixed(2)
      } | ${perRound} |`;
    }
    lines.push(
      `| ${row.label} | ${row.unit} | ${format(m, row.digits)} |${baseline} ${
        format(h, row.digits)
      } | ${ratio === undefined ? "n/a" : ratio.toFixed(2)} | ${bar} | ${met} | ${
        row.floor === undefined ? "" : format(f, row.digits)
      } | ${
        row.floor === undefined ? "" : floorRatio === undefined ? "n/a" : floorRatio.toFixed(2)
      } | ${direct} |`,
    );
  }
  return lines.join("\n");
}

/**
 * Every round's value of every figure and target (Markdown).
 *
 * @param rows The figures.
 * @param samples The values measured.
 * @param rounds How many rounds ran.
 * @returns The table.
 */
export function perRoundTable(rows: readonly Row[], samples: Samples, rounds: number): string {
  const header = Array.from({ length: rounds }, (_, i) => `round ${i + 1}`);
  const lines = [
    `| figure | target | ${header.join(" | ")} |`,
    `| --- | --- | ${header.map(() => "---:").join(" | ")} |`,
  ];
  for (const row of rows) {
    const targets = [
      row.mtlb,
      ...(row.baseline ? [row.baseline] : []),
      row.haproxy,
      ...(row.floor ? [row.floor] : []),
      ...(row.direct ? [row.direct[1]] : []),
    ];
    for (const target of targets) {
      const metric = row.direct && target === row.direct[1] ? row.direct[0] : row.metric;
      const values = samples.get(metric, target);
      if (values.length === 0) continue;
      const cells = Array.from({ length: rounds }, (_, i) => format(values[i], row.digits));
      lines.push(`| ${row.label} | ${target} | ${cells.join(" | ")} |`);
    }
  }
  return lines.join("\n");
}
