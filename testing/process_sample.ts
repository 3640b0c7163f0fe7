/**
 * A process's figures from /proc: descriptors, memory, threads, child processes and CPU
 * time. Deno lets only `--allow-all` read /proc/PID, so `sh` reads it.
 *
 * @module
 */
import { run } from "./subprocess.ts";

/** One reading of a process and its descendants. */
export interface ProcessSample {
  /** Open file descriptors of the process. */
  fds: number;
  /** Resident memory of the process (VmRSS), KiB; NaN once it has exited. */
  rssKib: number;
  /** Peak resident memory of the process since it started (VmHWM), KiB. */
  hwmKib: number;
  /** Threads of the process. */
  threads: number;
  /** Threads of the process running Deno Workers (named `worker-N`). */
  workerThreads: number;
  /** Descendant processes. */
  children: number;
  /** Resident memory of the process and its descendants, KiB. */
  treeRssKib: number;
  /** CPU time (user + system, every thread) of the process and its live descendants, ms. */
  cpuMs: number;
}

/**
 * Prints, for the process `$0`: `F` descriptors, `S R|H|T` its VmRSS, VmHWM and
 * Threads, `N` each thread's name; then for it and each descendant: `P` its PID, `R` its
 * VmRSS and `C` its user + system clock ticks.
 */
const SCRIPT = `p="$0"
tree() {
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done
}
echo "F $(ls /proc/"$p"/fd 2>/dev/null | wc -l)"
sed -n -e 's/^VmRSS:[[:space:]]*\\([0-9]*\\) kB/S R \\1/p' -e 's/^VmHWM:[[:space:]]*\\([0-9]*\\) kB/S H \\1/p' \\
  -e 's/^Threads:[[:space:]]*\\([0-9]*\\)/S T \\1/p' /proc/"$p"/status 2>/dev/null
cat /proc/"$p"/task/*/comm 2>/dev/null | sed 's/^/N /'
for q in $(tree "$p"); do
  echo "P $q"
  sed -n "s/^VmRSS:[[:space:]]*\\([0-9]*\\) kB/R \\1/p" /proc/"$q"/status 2>/dev/null
  awk '{print "C", $14 + $15}' /proc/"$q"/stat 2>/dev/null
done`;

let clockTicks: Promise<number> | undefined;

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`). */
function ticksPerSecond(): Promise<number> {
  clockTicks ??= run(["getconf", "CLK_TCK"], { timeoutMs: 10_000 }).then(
    ({ stdout }) => Number(stdout.trim()) || 100,
    () => 100,
  );
  return clockTicks;
}

/**
 * Reads a process's figures from /proc.
 *
 * @example Usage
 * ```ts
 * import { sampleProcess } from "./process_sample.ts";
 * import assert from "node:assert/strict";
 *
 * const sample = await sampleProcess(Deno.pid);
 * assert.ok(sample.rssKib > 0 && sample.fds > 2 && sample.threads >= 1);
 * assert.ok(sample.treeRssKib >= sample.rssKib);
 * ```
 *
 * @param pid The process.
 * @returns Its figures (the ones of a process that has exited are 0 or NaN).
 */
export async function sampleProcess(pid: number): Promise<ProcessSample> {
  const [{ stdout }, ticks] = await Promise.all([
    run(["sh", "-c", SCRIPT, String(pid)], { timeoutMs: 30_000, allowFailure: true }),
    ticksPerSecond(),
  ]);
  const sample: ProcessSample = {
    fds: 0,
    rssKib: NaN,
    hwmKib: NaN,
    threads: NaN,
    workerThreads: 0,
    children: -1,
    treeRssKib: 0,
    cpuMs: 0,
  };
  let cpuTicks = 0;
  for (const line of stdout.split("\n")) {
    const [kind, value = ""] = [line.slice(0, 1), line.slice(2)];
    if (kind === "F") sample.fds = Number(value);
    else if (line.startsWith("S R ")) sample.rssKib = Number(line.slice(4));
    else if (line.startsWith("S H ")) sample.hwmKib = Number(line.slice(4));
    else if (line.startsWith("S T ")) sample.threads = Number(line.slice(4));
    else if (kind === "N" && value.startsWith("worker-")) sample.workerThreads++;
    else if (kind === "P") sample.children++;
    else if (kind === "R") sample.treeRssKib += Number(value);
    else if (kind === "C") cpuTicks += Number(value);
  }
  sample.children = Math.max(0, sample.children);
  sample.cpuMs = cpuTicks * 1000 / ticks;
  return sample;
}

/**
 * Runs `work` and measures the CPU time the process tree of `pid` used meanwhile: what
 * the work cost that process, whatever it cost the one that asked for it.
 *
 * @example Usage
 * ```ts
 * import { cpuDuring } from "./process_sample.ts";
 * import assert from "node:assert/strict";
 *
 * const [sum, cpuMs] = await cpuDuring(Deno.pid, () => {
 *   let n = 0;
 *   for (let i = 0; i < 1e7; i++) n += i;
 *   return Promise.resolve(n);
 * });
 * assert.ok(sum > 0 && cpuMs >= 0);
 * ```
 *
 * @param pid The process.
 * @param work What to measure.
 * @returns What `work` resolved with, and the CPU time in ms.
 */
export async function cpuDuring<T>(pid: number, work: () => Promise<T>): Promise<[T, number]> {
  const before = (await sampleProcess(pid)).cpuMs;
  const result = await work();
  const after = (await sampleProcess(pid)).cpuMs;
  return [result, after - before];
}
