/**
 * Test helpers that drive the balancer with `openssl s_client`, a TLS client
 * independent of the runtime under test (it resumes sessions and offers early data
 * as told). Tests that use it skip when openssl is not installed.
 */
import { join } from "node:path";

/** How long any single awaited event may take before the test fails. */
export const GUARD_MS = 10_000;

/** `openssl s_client -help`, or `undefined` without openssl. */
export const OPENSSL_HELP: string | undefined = await new Deno.Command("openssl", {
  args: ["s_client", "-help"],
  stdout: "piped",
  stderr: "piped",
}).output().then(
  (out) => new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout),
  () => undefined,
);

/** Whether openssl is installed. */
export const HAVE_OPENSSL: boolean = OPENSSL_HELP !== undefined;

/**
 * Resolves with `promise`, or rejects once `ms` passed: a failure guard, never a wait.
 *
 * @param promise What the test waits for.
 * @param what Its name, for the error.
 * @param ms How long it may take.
 * @returns What `promise` resolves with.
 */
export async function guard<T>(promise: Promise<T>, what: string, ms = GUARD_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

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
 * `holdUntil` shows in its output (s_client quits at the end of its input).
 *
 * @param args The arguments after `s_client`.
 * @param input What to type.
 * @param options The text to wait for before closing stdin.
 * @returns The exit code and everything printed.
 */
export async function sClient(
  args: string[],
  input: string,
  options: { holdUntil?: string } = {},
): Promise<{ code: number; text: string }> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const killer = setTimeout(() => child.kill(), GUARD_MS);
  let out = "";
  const seen = Promise.withResolvers<void>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      out += chunk;
      if (options.holdUntil !== undefined && out.includes(options.holdUntil)) seen.resolve();
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input)).catch(() => {});
  if (options.holdUntil !== undefined) await Promise.race([seen.promise, pumps]);
  await writer.close().catch(() => {});
  await pumps;
  const { code } = await child.status;
  clearTimeout(killer);
  return { code, text: out };
}
