/**
 * The benchmark's command line and tables (bench/): the baseline columns appear only
 * with `--baseline`.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { UsageError } from "../bench/errors.ts";
import { parseOptions } from "../bench/options.ts";
import { figureRows } from "../bench/report/rows.ts";
import { Samples } from "../bench/report/samples.ts";
import { perRoundTable, table } from "../bench/report/table.ts";

const SIZES = parseOptions([], "RESULTS.md").sizes;

/** Three rounds of request rates and added latencies for the given targets. */
function samplesOf(values: Record<string, number[]>): Samples {
  const samples = new Samples();
  for (const [target, list] of Object.entries(values)) {
    for (const value of list) {
      samples.add("set", target, value);
      samples.add("p50", target, value / 1000 - 20);
    }
  }
  return samples;
}

Deno.test("parseOptions() reads --baseline as an absolute folder, none by default", () => {
  assert.equal(parseOptions([], "RESULTS.md").baseline, undefined);
  assert.equal(
    parseOptions(["--baseline", "../before"], "RESULTS.md").baseline,
    resolve("../before"),
  );
  assert.throws(() => parseOptions(["--baseline="], "RESULTS.md"), UsageError, "--baseline needs");
});

Deno.test("table() has no baseline columns without a baseline", () => {
  const samples = samplesOf({ mtlb: [30_000, 31_000, 32_000], HAProxy: [40_000, 40_000, 40_000] });
  const [header, , set] = table(figureRows(SIZES), samples).split("\n");
  assert.equal(
    header,
    "| figure | unit | mtlb | HAProxy | mtlb/HAProxy | Deno floor | mtlb/floor | mtlb/floor per round | floor/HAProxy | NGINX | NGINX/HAProxy | bar | met | direct (plaintext) |",
  );
  assert.match(
    set!,
    /^\| Request rate, SET \(50 connections\) \| req\/s \| 31,000 \| 40,000 \| 0\.78 \|/,
  );
});

Deno.test("table() shows mtlb/floor with its range over the rounds, NGINX/HAProxy, and judges each bar on its own ratio", () => {
  const samples = samplesOf({
    mtlb: [30_000, 31_100, 33_000],
    HAProxy: [40_000, 40_000, 40_000],
    "Deno floor": [31_000, 32_000, 32_000],
    NGINX: [44_000, 44_000, 44_000],
  });
  for (const [target, values] of [["mtlb", [44, 45, 46]], ["HAProxy", [1, 1.2, 1.4]]] as const) {
    for (const value of values) samples.add(`get_ms_${400 * 1024}`, target, value);
  }
  const lines = table(figureRows(SIZES), samples).split("\n");
  const set = lines.find((line) => line.startsWith("| Request rate, SET"))!;
  // mtlb/floor 31,100/32,000 = 0.972 (round ratios 0.97, 0.97, 1.03): the bar is met.
  assert.match(
    set,
    /\| 31,100 \| 40,000 \| 0\.78 \| 32,000 \| 0\.97 \| 0\.97–1\.03 \| 0\.80 \| 44,000 \| 1\.10 \| mtlb\/floor >= 0\.97 \| yes \|/,
  );
  // 45 ms against 1.2 ms: far beyond twice HAProxy's time.
  const large = lines.find((line) => line.startsWith("| GET one at a time, 400 KiB value"))!;
  assert.match(large, /\| 45\.00 \| 1\.20 \| 37\.50 \|.*\| mtlb\/HAProxy <= 2\.00 \| no \|/);
});

Deno.test("table() shows the baseline, mtlb/baseline and its range over the rounds", () => {
  const samples = samplesOf({
    mtlb: [30_000, 31_000, 33_000],
    "mtlb (baseline)": [30_000, 32_000, 30_000],
    HAProxy: [40_000, 40_000, 40_000],
  });
  const rows = figureRows(SIZES, { baseline: { single: "mtlb (baseline)" } });
  const lines = table(rows, samples).split("\n");
  assert.match(
    lines[0]!,
    /^\| figure \| unit \| mtlb \| mtlb \(baseline\) \| mtlb\/baseline \| per round \| HAProxy \|/,
  );
  // Medians 31,000 and 30,000; per round 1.00, 0.97, 1.10.
  assert.match(
    lines[2]!,
    /\| req\/s \| 31,000 \| 30,000 \| 1\.03 \| 0\.97–1\.10 \| 40,000 \| 0\.78 \|/,
  );
  // Added latencies (p50) of 10, 11, 13 against 10, 12, 10 us.
  const p50 = lines.find((line) => line.startsWith("| Added latency p50"))!;
  assert.match(p50, /\| us \| 11 \| 10 \| 1\.10 \| 0\.92–1\.30 \|/);
  const perRound = perRoundTable(rows, samples, 3);
  assert.match(
    perRound,
    /\| Request rate, SET \(50 connections\) \| mtlb \(baseline\) \| 30,000 \| 32,000 \| 30,000 \|/,
  );
});
