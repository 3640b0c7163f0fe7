/**
 * The results file (`bench/RESULTS.md`): the machine, the tool versions, the command,
 * the date, the table, the generated configurations and every round's values.
 *
 * @module
 */

/** What goes into the results file. */
export interface Results {
  /** Whether it was a `--quick` smoke run. */
  quick: boolean;
  /** When the run started. */
  started: Date;
  /** The command line. */
  command: string;
  /** "one round", or "medians of N rounds". */
  medianOf: string;
  /** The machine, as a Markdown list. */
  machine: string[];
  /** The tool versions, as a Markdown list. */
  versions: string[];
  /** The table of medians. */
  summary: string;
  /** What the multi-core pair ran, or "". */
  multiNote: string;
  /** The generated mtlb configuration. */
  mtlbConfig: string;
  /** The generated HAProxy configuration. */
  haproxyConfig: string;
  /** The generated NGINX configuration. */
  nginxConfig: string;
  /** The other mtlb checkout run beside this one (`--baseline`), if any. */
  baseline?: string | undefined;
  /** The run's temporary folder, shown as `$TMP` in the configurations. */
  tempDir: string;
  /** The table of every round's values. */
  perRound: string;
}

/** The paragraph on the baseline's columns. */
function baselineNote(dir: string): string {
  return `
"mtlb (baseline)" is the mtlb checkout in \`${dir}\` (see Versions), run the same way with
the same config, PKI and load, taking its turn with the others in every round.
"mtlb/baseline" is the ratio of the medians; "per round" the lowest and highest ratio of
one round's figures, both taken in that round: the spread the rounds alone give.
`;
}

/**
 * The results file's Markdown.
 *
 * @param results What the run found.
 * @returns The text.
 */
export function resultsFile(results: Results): string {
  const { medianOf, summary, multiNote, tempDir } = results;
  return `# mtlb against HAProxy, NGINX and the Deno floor: benchmark results

${
    results.quick
      ? "**Smoke run (`--quick`): small sizes and one round; not a measurement.**\n\n"
      : ""
  }Recorded ${results.started.toISOString()} by \`${results.command}\` (${medianOf}; see
[README.md](README.md) for what each figure means and how it is measured).

## Machine

${results.machine.join("\n")}

## Versions

${results.versions.join("\n")}

## Results (${medianOf})

Ratios are of the medians: mtlb/HAProxy, mtlb/floor (with its lowest and highest value in one
round, where both ran in turn: the noise of that comparison), floor/HAProxy and NGINX/HAProxy;
above 1.0 is better on rates, worse on times, memory and CPU. "bar" is the goal mtlb set
itself, on the ratio it names. Latency is added to a plaintext round trip straight to Redis,
whose own p50/p99 is in the last column. The CPU rows are the balancer process's own user +
system time over the run, whatever the clients use: the cost of the work, steadier than rates
on a shared 2-core machine.

"Deno floor" is [\`_floor.ts\`](_floor.ts): a \`node:tls\` server (TLS 1.3, client
certificate verified) piped to \`node:net\` upstreams, with none of mtlb (no identity,
policy, limits, health checks, metrics, logs or timeouts). It is what the Deno runtime
costs by itself on the public API that verifies client certificates; mtlb goes below it only
where it skips work that API does for every connection (see docs/PERFORMANCE.md). The plain TCP row runs the same requests without TLS through a
plain \`node:net\` listener of the floor, a plain \`bind\` of HAProxy and a plain \`listen\`
of NGINX: the runtime's socket path alone (mtlb only speaks mutual TLS, so it has no figure
there). NGINX is its \`stream\` module with one worker process; it has no active health
checks (open-source NGINX), so it runs none.
${results.baseline === undefined ? "" : baselineNote(results.baseline)}
${summary}
${multiNote ? `\n${multiNote}\n` : ""}
## Configurations

The generated configurations of the single-threaded balancers (ports and paths vary per run).

<details><summary>mtlb</summary>

\`\`\`toml
${results.mtlbConfig.replaceAll(tempDir, "$TMP").trim()}
\`\`\`

</details>

<details><summary>HAProxy</summary>

\`\`\`
${results.haproxyConfig.replaceAll(tempDir, "$TMP").trim()}
\`\`\`

</details>

<details><summary>NGINX</summary>

\`\`\`nginx
${results.nginxConfig.replaceAll(tempDir, "$TMP").trim()}
\`\`\`

</details>

## Per round

${results.perRound}

Under the latency figures, "direct" is the plaintext round trip itself, not an added latency.
`;
}
