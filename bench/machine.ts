/**
 * The machine the benchmark runs on: the tools it needs (installed with `--install`),
 * the open-files limit, and the description and versions the results record.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { ROOT } from "../testing/paths.ts";
import { run as runCommand } from "../testing/subprocess.ts";
import { BenchError } from "./errors.ts";
import type { Sizes } from "./options.ts";
import { STREAM_MODULE } from "./targets/nginx.ts";
import { run, setOpenFiles } from "./processes.ts";

const TOOLS = ["redis-server", "redis-benchmark", "haproxy", "nginx", "socat", "openssl"] as const;
const APT_PACKAGES = [
  "redis-server",
  "redis-tools",
  "haproxy",
  "nginx-light",
  "libnginx-mod-stream",
  "socat",
  "openssl",
];

/** Whether NGINX's stream module is installed where `targets/nginx.ts` loads it. */
async function hasStreamModule(): Promise<boolean> {
  return (await Deno.stat(STREAM_MODULE).catch(() => undefined))?.isFile === true;
}

/** Whether `name` is an executable on PATH. */
async function onPath(name: string): Promise<boolean> {
  const { success } = await runCommand(["sh", "-c", 'command -v "$0" >/dev/null 2>&1', name], {
    allowFailure: true,
  });
  return success;
}

/** First line (or line `pick`) of a command's output, or "unknown". */
async function version(cmd: readonly string[], pick = 0): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, 10_000);
    return (stdout || stderr).trim().split("\n")[pick]?.trim() || "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * Checks that every tool is on PATH; installs the missing ones with `apt-get` when told.
 *
 * @param install Whether to install what is missing.
 * @param log Where progress goes.
 * @throws {BenchError} When a tool is missing (and cannot be installed).
 */
export async function checkTools(install: boolean, log: (message: string) => void): Promise<void> {
  const missing: string[] = [];
  for (const tool of TOOLS) if (!(await onPath(tool))) missing.push(tool);
  if (!(await hasStreamModule())) missing.push(`NGINX's stream module (${STREAM_MODULE})`);
  if (missing.length === 0) return;
  const command = `apt-get install -y ${APT_PACKAGES.join(" ")}`;
  if (!install) {
    throw new BenchError(
      `Missing tools: ${
        missing.join(", ")
      }. Install them (Debian, Ubuntu) with:\n  sudo ${command}\nor run \`deno task bench --install\` as root`,
    );
  }
  if (Deno.uid() !== 0) {
    throw new BenchError(
      `Missing tools: ${missing.join(", ")}. --install needs root; run instead:\n  sudo ${command}`,
    );
  }
  if (!(await onPath("apt-get"))) {
    throw new BenchError(
      `Missing tools: ${
        missing.join(", ")
      }, and apt-get is not available: install redis (server and tools), haproxy, nginx with its stream module, socat and openssl with your package manager`,
    );
  }
  log(`Installing ${missing.join(", ")} with apt-get`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update"], 600_000, { env, inherit: true });
  await run(["apt-get", "install", "-y", ...APT_PACKAGES], 600_000, { env, inherit: true });
  const still = [];
  for (const tool of TOOLS) if (!(await onPath(tool))) still.push(tool);
  if (!(await hasStreamModule())) still.push(STREAM_MODULE);
  if (still.length > 0) throw new BenchError(`Still missing after apt-get: ${still.join(", ")}`);
}

/**
 * Raises the open-files limit children get, or explains why it cannot.
 *
 * @param sizes The sizes of the run (the idle connections need descriptors).
 * @throws {BenchError} When the hard limit is too low.
 */
export async function checkOpenFiles(sizes: Sizes): Promise<void> {
  const { stdout } = await runCommand(["sh", "-c", "ulimit -Sn; ulimit -Hn"], {
    allowFailure: true,
  });
  const [soft, hard] = stdout.trim().split("\n").map((v) =>
    v === "unlimited" ? Infinity : Number(v)
  );
  const nofile = Math.min(hard ?? 1024, Math.max(soft ?? 1024, 65_536));
  setOpenFiles(nofile);
  // The balancer holds two descriptors per idle connection; HAProxy also sizes maxconn from it.
  const needed = sizes.idleConnections * 2 + 1_000;
  if (nofile < needed) {
    throw new BenchError(
      `The open-files limit is ${hard} (hard), the benchmark needs ${needed}: raise it, for example with \`ulimit -n ${needed}\` as root`,
    );
  }
}

/** @returns The machine, as Markdown list items: CPU, memory, kernel, load. */
export async function machine(): Promise<string[]> {
  // Deno lets only --allow-all read /proc, so a shell reads it.
  const read = (path: string): Promise<string> =>
    run(["cat", path], 10_000).then(({ stdout }) => stdout, () => "");
  const cpuinfo = await read("/proc/cpuinfo");
  const meminfo = await read("/proc/meminfo");
  const loadavg = await read("/proc/loadavg");
  const kernel = (await read("/proc/sys/kernel/osrelease")).trim() || "unknown";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const memKib = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  return [
    `- CPU: ${model}, ${navigator.hardwareConcurrency} cores`,
    `- Memory: ${(memKib / 1024 / 1024).toFixed(1)} GiB`,
    `- Kernel: Linux ${kernel}`,
    `- Load average when the run started: ${loadavg.trim().split(" ").slice(0, 3).join(" ")}`,
  ];
}

/**
 * The commit of a git checkout, if `dir` is the top of one.
 *
 * @returns `abc1234` (`abc1234+` with uncommitted changes), or undefined (a `git archive`
 * extract, or no git).
 */
async function commitOf(dir: string): Promise<string | undefined> {
  try {
    const git = (...args: string[]) => run(["git", "-C", dir, ...args], 10_000);
    const top = (await git("rev-parse", "--show-toplevel")).stdout.trim();
    if (resolve(top) !== resolve(dir)) return undefined;
    const commit = (await git("rev-parse", "--short", "HEAD")).stdout.trim();
    const dirty = (await git("status", "--porcelain", "--untracked-files=no")).stdout.trim();
    return dirty === "" ? commit : `${commit}+`;
  } catch {
    return undefined;
  }
}

/** A checkout of mtlb as a Markdown list item: its label, version, folder and commit. */
async function checkoutLine(label: string, dir: string): Promise<string> {
  const denoJson = JSON.parse(await Deno.readTextFile(join(dir, "deno.json")));
  const commit = await commitOf(dir);
  return `- ${label}: ${denoJson.version ?? "no version"} in \`${dir}\`, ${
    commit === undefined ? "not a git checkout" : `commit ${commit}`
  }`;
}

/**
 * @param baseline The checkout run as the baseline, if any: then both checkouts are
 * listed, with their folders and commits.
 * @returns The versions of mtlb, Deno and every tool, as Markdown list items.
 */
export async function versions(baseline?: string): Promise<string[]> {
  const denoJson = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  return [
    `- mtlb ${denoJson.version} on Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    ...(baseline === undefined ? [] : [
      await checkoutLine("mtlb", resolve(ROOT)),
      await checkoutLine("mtlb (baseline)", baseline),
    ]),
    `- ${await version(["haproxy", "-v"])}`,
    `- ${await version(["nginx", "-v"])}, stream module`,
    `- ${await version(["redis-server", "--version"])}`,
    `- ${await version(["redis-benchmark", "--version"])}`,
    `- ${await version(["openssl", "version"])}`,
    `- ${await version(["socat", "-V"], 1)}`,
  ];
}
