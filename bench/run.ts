/**
 * Side-by-side benchmark of mtlb against HAProxy, NGINX and the Deno floor:
 * `deno task bench [options]`.
 *
 * Starts two `redis-server`s and a byte sink as upstreams, generates a PKI, runs mtlb,
 * HAProxy, NGINX (stream) and the Deno floor with equivalent configs on it, and measures
 * each in turn, interleaved over several rounds, with clients none of them ships:
 * `redis-benchmark`, `socat`, `openssl s_time`, plus three small Deno clients in this
 * folder for held connections, round-trip latency and large replies one at a time. Prints a table of medians and writes `bench/RESULTS.md`.
 * With `--baseline DIR`, the mtlb checkout in DIR runs too, as "mtlb (baseline)",
 * interleaved with the others, and the table compares the two mtlb.
 * Everything listens on 127.0.0.1 and everything it starts is stopped on exit, on
 * failure and on Ctrl-C. See bench/README.md.
 *
 * The parts: `options.ts` (command line), `machine.ts` (tools, limits, versions),
 * `processes.ts` (every child), `pki.ts` and `upstreams.ts` (what the targets share),
 * `targets/` (mtlb, HAProxy, the Deno floor, NGINX), `round.ts` and `measure/` (the figures),
 * `report/` (the tables and the results file).
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GuardError } from "../testing/guard.ts";
import { sampleProcess } from "../testing/process_sample.ts";
import { SubprocessError } from "../testing/subprocess.ts";
import { BenchError, UsageError } from "./errors.ts";
import { checkOpenFiles, checkTools, machine, versions } from "./machine.ts";
import { requestRate } from "./measure/request_rate.ts";
import { parseOptions, USAGE } from "./options.ts";
import { generatePki } from "./pki.ts";
import { run, stopAll } from "./processes.ts";
import { resultsFile } from "./report/results_file.ts";
import { type BaselineLabels, figureRows, type MultiPair } from "./report/rows.ts";
import { Samples } from "./report/samples.ts";
import { perRoundTable, table } from "./report/table.ts";
import { measureRound } from "./round.ts";
import { startFloor } from "./targets/floor.ts";
import { startHaproxy } from "./targets/haproxy.ts";
import { startMtlb } from "./targets/mtlb.ts";
import { NGINX, startNginx } from "./targets/nginx.ts";
import { FLOOR, type Target } from "./targets/target.ts";
import { startUpstreams } from "./upstreams.ts";

const HERE = fileURLToPath(new URL(".", import.meta.url));

/** Label of the baseline's single-threaded mtlb (`--baseline`). */
const BASELINE = "mtlb (baseline)";

let tempDir: string | undefined;
let cleaning: Promise<void> | undefined;

/** Stops every child and removes the temporary directory; safe to call twice. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAll();
    if (tempDir !== undefined) await Deno.remove(tempDir, { recursive: true }).catch(() => {});
  })();
  return cleaning;
}

function log(message: string): void {
  console.error(message);
}

/**
 * Checks that `dir` holds an mtlb checkout to run beside this one.
 *
 * @throws {UsageError} When it has no `main.ts` or `deno.json`.
 */
async function checkBaseline(dir: string): Promise<void> {
  for (const file of ["main.ts", "deno.json"]) {
    const info = await Deno.stat(join(dir, file)).catch(() => undefined);
    if (!info?.isFile) {
      throw new UsageError(
        `--baseline ${dir} is not an mtlb checkout: it has no ${file} (give the folder of a worktree or of a \`git archive\` extract)`,
      );
    }
  }
}

async function main(args: string[]): Promise<number> {
  const options = parseOptions(args, join(HERE, "RESULTS.md"));
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const { sizes, rounds, workers, out, baseline } = options;
  const command = ["deno task bench", ...args].join(" ");
  const started = new Date();

  if (baseline !== undefined) await checkBaseline(baseline);
  await checkTools(options.install, log);
  await checkOpenFiles(sizes);
  const machineLines = await machine();
  const versionLines = await versions(baseline);

  tempDir = await Deno.makeTempDir({ prefix: "mtlb-bench-" });
  log(`Generating a PKI in ${tempDir}`);
  const pki = await generatePki(join(tempDir, "pki"));
  log("Starting redis-server x2 and the sink");
  const upstreams = await startUpstreams();
  log(
    `Starting mtlb${
      baseline === undefined ? "" : ", its baseline"
    }, HAProxy, the Deno floor and NGINX`,
  );
  const setup = { pki, upstreams };
  const mtlb = await startMtlb(tempDir, { ...setup, workers: 1, label: "mtlb" });
  const haproxy = await startHaproxy(tempDir, pki, upstreams, 1, "HAProxy");
  const floor = await startFloor(pki, upstreams, FLOOR);
  const nginx = await startNginx(tempDir, pki, upstreams, NGINX);
  const single = [mtlb, haproxy, floor, nginx];
  if (baseline !== undefined) {
    const before = await startMtlb(tempDir, {
      ...setup,
      workers: 1,
      label: BASELINE,
      checkout: baseline,
    });
    single.splice(1, 0, before);
  }

  let multi: Target[] = [];
  let baselineMulti: string | undefined;
  const multiNotes: string[] = [];
  const pair: MultiPair | undefined = workers > 1
    ? { workers, mtlb: `mtlb workers=${workers}`, haproxy: `HAProxy nbthread=${workers}` }
    : undefined;
  if (pair !== undefined) {
    /** Starts an mtlb with `workers`; stops it and returns nothing if it runs no worker. */
    const startMulti = async (label: string, checkout?: string) => {
      const target = await startMtlb(tempDir!, { ...setup, workers, label, checkout });
      const info = await sampleProcess(target.proc.pid);
      const seen = info.children + info.workerThreads;
      if (seen > 0) {
        const who = checkout === undefined ? "mtlb" : "The baseline";
        multiNotes.push(
          `${who} with \`workers = ${workers}\` ran ${seen} Worker threads or child processes.`,
        );
        return target;
      }
      await target.proc.stop();
      return undefined;
    };
    const mtlbN = await startMulti(pair.mtlb);
    const haproxyN = await startHaproxy(tempDir, pki, upstreams, workers, pair.haproxy);
    if (mtlbN === undefined) {
      multiNotes.unshift(
        `mtlb with \`workers = ${workers}\` ran no Worker thread or child process: ` +
          "`[server] workers` is not implemented yet, so its figures are n/a; HAProxy's are measured for reference.",
      );
      log(multiNotes[0]!);
    }
    multi = [...(mtlbN === undefined ? [] : [mtlbN]), haproxyN];
    if (baseline !== undefined) {
      const label = `${pair.mtlb} (baseline)`;
      const beforeN = await startMulti(label, baseline);
      if (beforeN === undefined) {
        multiNotes.push(`${label} ran no Worker thread or child process: its figures are n/a.`);
      } else {
        multi.splice(1, 0, beforeN);
        baselineMulti = label;
      }
    }
  }
  const multiNote = multiNotes.join(" ");

  const samples = new Samples();
  const all = [...single, ...multi];
  log(`Warming up (${sizes.warmupRequests} requests through each balancer)`);
  for (const target of all) await requestRate(pki, target.redisPort, sizes.warmupRequests, true);

  for (let round = 0; round < rounds; round++) {
    await measureRound(round, rounds, {
      dir: tempDir,
      pki,
      upstreams,
      sizes,
      single,
      multi,
      samples,
      log,
    });
  }

  const baselineLabels: BaselineLabels | undefined = baseline === undefined
    ? undefined
    : { single: BASELINE, ...(baselineMulti === undefined ? {} : { multi: baselineMulti }) };
  const rows = figureRows(sizes, { multi: pair, baseline: baselineLabels });
  const summary = table(rows, samples);
  const medianOf = rounds === 1 ? "one round" : `medians of ${rounds} rounds`;
  console.log(`\n${options.quick ? "Smoke run (--quick), " : ""}${medianOf}:\n\n${summary}\n`);
  if (multiNote) console.log(`${multiNote}\n`);
  for (const target of all) {
    if (target.proc.stderrTail) {
      log(`${target.label} wrote to standard error (last lines):\n${target.proc.stderrTail}\n`);
    }
  }

  if (out === undefined) {
    log("No results file written: --quick is a smoke run (give --out FILE to keep it)");
    return 0;
  }
  await Deno.writeTextFile(
    out,
    resultsFile({
      quick: options.quick,
      started,
      command,
      medianOf,
      machine: machineLines,
      versions: versionLines,
      summary,
      multiNote,
      mtlbConfig: mtlb.config,
      haproxyConfig: haproxy.config,
      nginxConfig: nginx.config,
      baseline,
      tempDir,
      perRound: perRoundTable(rows, samples, rounds),
    }),
  );
  // Formatted as `deno fmt --check` (in `deno task ok`) expects the committed file.
  await run([Deno.execPath(), "fmt", "--quiet", out], 60_000).catch((error) =>
    log(`Could not format ${out}: ${error.message}`)
  );
  log(`Wrote ${out}`);
  return 0;
}

if (import.meta.main) {
  let interrupted = false;
  const onSignal = (signal: Deno.Signal) => () => {
    if (interrupted) return;
    interrupted = true;
    log(`\nStopping on ${signal}`);
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal("SIGINT"));
  Deno.addSignalListener("SIGTERM", onSignal("SIGTERM"));
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (error) {
    if (interrupted) {
      // The measurement failed because its processes were stopped: not worth a message.
      code = 130;
    } else if (error instanceof UsageError) {
      log(`Cannot benchmark: ${error.message}\n\n${USAGE}`);
      code = 2;
    } else if (
      error instanceof BenchError || error instanceof SubprocessError ||
      error instanceof GuardError
    ) {
      log(`Cannot benchmark: ${error.message}`);
      code = 1;
    } else {
      throw error;
    }
  } finally {
    await cleanup();
  }
  Deno.exit(code);
}
