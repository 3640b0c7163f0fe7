/**
 * The benchmark's PKI: a CA, a server certificate for 127.0.0.1 and one client, `bench`.
 *
 * @module
 */
import { join } from "node:path";
import { writeDevPki } from "../lib/pki/dev_pki.ts";

/** File paths of the generated PKI. */
export interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Server certificate chain and key in one file, as HAProxy's `crt` wants. */
  serverPem: string;
  clientCert: string;
  clientKey: string;
  clientSpki: string;
}

/**
 * Writes the PKI (`writeDevPki`, ECDSA P-256) to `dir`.
 *
 * @param dir Where.
 * @returns Its files.
 */
export async function generatePki(dir: string): Promise<Pki> {
  const summary = await writeDevPki(dir, { clients: ["bench"] });
  const client = summary.clients[0]!;
  const serverPem = join(dir, "server.pem");
  await Deno.writeTextFile(
    serverPem,
    (await Deno.readTextFile(summary.serverCert)) + (await Deno.readTextFile(summary.serverKey)),
    { mode: 0o600 },
  );
  return {
    ca: summary.caCert,
    serverCert: summary.serverCert,
    serverKey: summary.serverKey,
    serverPem,
    clientCert: client.cert,
    clientKey: client.key,
    clientSpki: client.spkiSha256,
  };
}
