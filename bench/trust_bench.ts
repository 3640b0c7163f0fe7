/**
 * Cost per call of the certificate checks mtlb makes after a TLS handshake, for a
 * P-256 client certificate under a P-256 root, directly or through one intermediate:
 * reading the leaf, finding its issuer, the cheap path of a full handshake, the full
 * verification of a resumed session (first time, and with its signatures remembered),
 * and the CRL check.
 *
 * ```sh
 * deno run --allow-read --allow-env bench/trust_bench.ts [--rounds 9]
 * ```
 *
 * Each figure is the median over rounds of the mean time per call in a round.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ClientTrust } from "../lib/identity/client_trust.ts";
import { RevocationList } from "../lib/identity/crl.ts";
import { createCrl } from "../lib/pki/crl_issuer.ts";
import { readCertificate } from "../lib/identity/certificate.ts";
import { createCa, createIntermediateCa } from "../lib/pki/certificate_authority.ts";
import { issueCertificate } from "../lib/pki/issue_certificate.ts";
import { SignatureCache } from "../lib/identity/signature_cache.ts";
import { TrustStore, type VerifiedPath, type VerifyResult } from "../lib/identity/trust_store.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "9" } },
});
const ROUNDS = Number(values.rounds);

/** The median over rounds of the mean µs per call, each round `calls` long. */
function measure(calls: number, fn: () => unknown): number {
  for (let i = 0; i < Math.min(calls, 1000); i++) fn();
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) fn();
    rounds.push((performance.now() - start) * 1000 / calls);
  }
  rounds.sort((a, b) => a - b);
  return rounds[Math.floor(rounds.length / 2)]!;
}

function pathOf(result: VerifyResult): VerifiedPath {
  if (!result.ok) throw new Error(`Benchmark setup: ${result.reason}: ${result.detail}`);
  return result.path;
}

const root = await createCa({ commonName: "Bench root" });
const issuing = await createIntermediateCa(root, { commonName: "Bench issuing" });
const direct = await issueCertificate(root, {
  commonName: "bench-client",
  kind: "client",
  uris: ["spiffe://example.org/bench"],
});
const via = await issueCertificate(issuing, { commonName: "bench-via", kind: "client" });
const directChain = [direct.der];
const viaChain = [via.der, issuing.der];
// Two of each, verified in turn with room for one signature: nothing is remembered.
const issuing2 = await createIntermediateCa(root, { commonName: "Bench issuing 2" });
const direct2 = await issueCertificate(root, { commonName: "bench-client-2", kind: "client" });
const via2 = await issueCertificate(issuing2, { commonName: "bench-via-2", kind: "client" });
// A rollover: two CAs of one name; the signature decides (remembered after the first time).
const rollover = await createCa({ commonName: "Bench root" });
const rolled = await issueCertificate(rollover, { commonName: "bench-rolled", kind: "client" });
const both = TrustStore.fromPem(root.certPem + rollover.certPem, { cache: new SignatureCache() });
const forgetful = TrustStore.fromPem(root.certPem, {
  cache: new SignatureCache({ maxEntries: 1 }),
});
let turn = 0;
const alternate = <T>(a: T, b: T): T => (turn++ & 1) === 0 ? a : b;

const store = TrustStore.fromPem(root.certPem, { cache: new SignatureCache() });
const crl = await RevocationList.parse(
  (await createCrl(root, ["1234"])) + (await createCrl(issuing, [])),
  TrustStore.fromPem(root.certPem + issuing.certPem),
);
const trust = new ClientTrust({ store });
const trustCrl = new ClientTrust({ store, crl, crlMissing: "allow" });
const directPath = pathOf(store.verify(directChain));
const viaPath = pathOf(store.verify(viaChain));
if (both.issuerOf(rolled.der)?.authority !== both.authorities[1]) {
  throw new Error("Benchmark setup: the rollover's issuer");
}
for (const chain of [directChain, viaChain, [direct2.der], [via2.der, issuing2.der]]) {
  pathOf(forgetful.verify(chain));
  const verdict = trustCrl.checkHandshake(chain);
  if (!verdict.ok) throw new Error(`Benchmark setup: ${verdict.reason}: ${verdict.detail}`);
}

const rows: [string, number][] = [
  [
    "readCertificate (leaf: identity, validity, EKU, issuer)",
    measure(50_000, () => readCertificate(direct.der)),
  ],
  ["TrustStore.issuerOf (one CA of that name)", measure(50_000, () => store.issuerOf(direct.der))],
  [
    "TrustStore.issuerOf (two CAs of that name, signature remembered)",
    measure(20_000, () => both.issuerOf(rolled.der)),
  ],
  ["ClientTrust.checkHandshake, root", measure(50_000, () => trust.checkHandshake(directChain))],
  [
    "ClientTrust.checkHandshake, root + CRL",
    measure(50_000, () => trustCrl.checkHandshake(directChain)),
  ],
  [
    "ClientTrust.checkHandshake, intermediate",
    measure(20_000, () => trust.checkHandshake(viaChain)),
  ],
  [
    "RevocationList.checkPath, root",
    measure(200_000, () => crl.checkPath(directPath)),
  ],
  [
    "RevocationList.checkPath, intermediate",
    measure(
      200_000,
      () => crl.checkPath(viaPath, { missing: "allow" }),
    ),
  ],
  [
    "TrustStore.verify, root, signatures remembered",
    measure(20_000, () => store.verify(directChain)),
  ],
  [
    "TrustStore.verify, intermediate, signatures remembered",
    measure(20_000, () => store.verify(viaChain)),
  ],
  [
    "ClientTrust.verifyChain, root, signatures remembered",
    measure(20_000, () => trust.verifyChain(directChain)),
  ],
  [
    "TrustStore.verify, root, first time (1 signature)",
    measure(200, () => forgetful.verify(alternate(directChain, [direct2.der]))),
  ],
  [
    "TrustStore.verify, intermediate, first time (2 signatures)",
    measure(100, () => forgetful.verify(alternate(viaChain, [via2.der, issuing2.der]))),
  ],
];
const width = Math.max(...rows.map(([name]) => name.length));
console.log(`Deno ${Deno.version.deno}, ${ROUNDS} rounds, median of means, µs per call`);
for (const [name, us] of rows) console.log(`${name.padEnd(width)}  ${us.toFixed(2).padStart(8)}`);
