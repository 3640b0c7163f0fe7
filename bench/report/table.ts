/**
 * The tables of a run: the medians of every figure with the ratios and bars, and every
 * round's values.
 *
 * @module
 */
import type { Samples } from "./samples.ts";

/** A goal on a ratio of mtlb's figure: to the Deno floor's, or to HAProxy's. */
export interface Bar {
  /** What mtlb's figure is divided by. */
  of: "floor" | "haproxy";
  /** The ratio to reach: at least this on rates, at most this on costs. */
  value: number;
}

/** One row of the table: a figure for an mtlb target against the others. */
export interface Row {
  metric: string;
  label: string;
  unit: string;
  higherIsBetter: boolean;
  digits: number;
  /** The goal, if any. */
  bar?: Bar;
  mtlb: string;
  haproxy: string;
  /** The Deno floor's target label, when it ran this figure. */
  floor?: string;
  /** NGINX's target label, when it ran this figure. */
  nginx?: string;
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

/** A ratio as printed: two decimals, or "n/a". */
function ratioText(ratio: number | undefined): string {
  return ratio === undefined ? "n/a" : ratio.toFixed(2);
}

/**
 * The table of medians (Markdown): each figure for mtlb, HAProxy, the Deno floor and
 * NGINX; mtlb/HAProxy, mtlb/floor (with its lowest and highest value over the rounds),
 * floor/HAProxy and NGINX/HAProxy; the bar, whether it was met, and the plaintext
 * reference. When a row has a baseline (another mtlb checkout), its figure,
 * mtlb/baseline and the range of that ratio over the rounds come after mtlb's.
 *
 * @param rows The figures.
 * @param samples The values measured.
 * @returns The table.
 */
export function table(rows: readonly Row[], samples: Samples): string {
  const withBaseline = rows.some((row) => row.baseline !== undefined);
  const baselineHead = withBaseline ? " mtlb (baseline) | mtlb/baseline | per round |" : "";
  const baselineRule = withBaseline ? " ---: | ---: | ---: |" : "";
  const lines = [
    `| figure | unit | mtlb |${baselineHead} HAProxy | mtlb/HAProxy | Deno floor | mtlb/floor | mtlb/floor per round | floor/HAProxy | NGINX | NGINX/HAProxy | bar | met | direct (plaintext) |`,
    `| --- | --- | ---: |${baselineRule} ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |`,
  ];
  for (const row of rows) {
    const median = (label: string | undefined) =>
      label === undefined ? undefined : samples.median(row.metric, label);
    const m = median(row.mtlb);
    const h = median(row.haproxy);
    const f = median(row.floor);
    const n = median(row.nginx);
    const ratio = ratioOf(m, h);
    const ratios = { haproxy: ratio, floor: ratioOf(m, f) };
    const bar = row.bar === undefined
      ? ""
      : `mtlb/${row.bar.of === "floor" ? "floor" : "HAProxy"} ${row.higherIsBetter ? ">=" : "<="} ${
        row.bar.value.toFixed(2)
      }`;
    const reached = row.bar === undefined ? undefined : ratios[row.bar.of];
    const met = row.bar === undefined || reached === undefined
      ? ""
      : (row.higherIsBetter ? reached >= row.bar.value : reached <= row.bar.value)
      ? "yes"
      : "no";
    const direct = row.direct ? format(samples.median(...row.direct), row.digits) : "";
    let baseline = "";
    if (withBaseline) {
      const b = median(row.baseline);
      const perRound = row.baseline === undefined
        ? "n/a"
        : roundRatios(samples.get(row.metric, row.mtlb), samples.get(row.metric, row.baseline));
      baseline = ` ${format(b, row.digits)} | ${ratioText(ratioOf(m, b))} | ${perRound} |`;
    }
    const floorCells = row.floor === undefined
      ? " | | |"
      : ` ${format(f, row.digits)} | ${ratioText(ratios.floor)} | ${
        roundRatios(samples.get(row.metric, row.mtlb), samples.get(row.metric, row.floor))
      } |`;
    lines.push(
      `| ${row.label} | ${row.unit} | ${format(m, row.digits)} |${baseline} ${
        format(h, row.digits)
      } | ${ratioText(ratio)} |${floorCells} ${
        row.floor === undefined ? "" : ratioText(ratioOf(f, h))
      } | ${row.nginx === undefined ? "" : format(n, row.digits)} | ${
        row.nginx === undefined ? "" : ratioText(ratioOf(n, h))
      } | ${bar} | ${met} | ${direct} |`,
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
      ...(row.nginx ? [row.nginx] : []),
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
