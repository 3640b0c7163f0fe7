/**
 * Test helpers that drive the balancer with `openssl s_client`, a TLS client
 * independent of the runtime under test (it resumes sessions and offers early data
 * as told). Tests that use it skip when openssl is not installed.
 */
import { join } from "node:path";
import { GUARD_MS } from "../testing/guard.ts";
import { run, Subprocess } from "../testing/subprocess.ts";

/** `openssl s_client -help`, or `undefined` without openssl. */
export const OPENSSL_HELP: string | undefined = await run(["openssl", "s_client", "-help"], {
  allowFailure: true,
}).then(
  // 127: the shell found no openssl.
  (out) => out.code === 127 ? undefined : out.stderr + out.stdout,
  () => undefined,
);

/** Whether openssl is installed. */
export const HAVE_OPENSSL: boolean = OPENSSL_HELP !== undefined;

/**
 * The `s_client` arguments to reach a balancer's shared listener with a client
 * certificate, trusting the test CA.
 *
 * @param lb The balancer's port and test PKI folder.
 * @param cert The client certificate file.
 * @param key Its key file.
 * @returns The arguments.
 */
export function clientArgs(
  lb: { port(): number; pki: { dir: string } },
  cert: string,
  key: string,
): string[] {
  return [
    "-connect",
    `127.0.0.1:${lb.port()}`,
    "-CAfile",
    join(lb.pki.dir, "ca.crt"),
    "-cert",
    cert,
    "-key",
    key,
  ];
}

/**
 * Runs `openssl s_client ARGS`, writes `input`, and keeps stdin open until
 * `holdUntil` shows in its output (s_client quits at the end of its input). It is
 * stopped if it runs for longer than the failure guard.
 *
 * @param args The arguments after `s_client`.
 * @param input What to type.
 * @param options The text to wait for before closing stdin.
 * @returns The exit code and everything printed (standard output and error, in order).
 */
export async function sClient(
  args: string[],
  input: string,
  options: { holdUntil?: string } = {},
): Promise<{ code: number; text: string }> {
  await using child = new Subprocess(["openssl", "s_client", ...args], {
    stdin: "piped",
    stderr: "stdout",
  });
  const killer = setTimeout(() => child.kill("SIGTERM"), GUARD_MS);
  try {
    let text = "";
    const read = async (until?: string): Promise<void> => {
      for await (const line of child.stdout) {
        text += `${line}\n`;
        if (until !== undefined && text.includes(until)) return;
      }
    };
    await child.write(input).catch(() => {});
    if (options.holdUntil !== undefined) await read(options.holdUntil);
    await child.closeStdin();
    await read();
    const { code } = await child.status;
    return { code, text };
  } finally {
    clearTimeout(killer);
  }
}
