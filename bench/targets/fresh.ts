/**
 * A fresh instance of a single-threaded target, for the memory figure: a process with no
 * heap left over from earlier tests.
 *
 * @module
 */
import type { Pki } from "../pki.ts";
import type { Upstreams } from "../upstreams.ts";
import { startFloor } from "./floor.ts";
import { startHaproxy } from "./haproxy.ts";
import { startMtlb } from "./mtlb.ts";
import { startNginx } from "./nginx.ts";
import type { Target } from "./target.ts";

/**
 * Starts another instance of `target`'s kind (and checkout, for mtlb), single-threaded,
 * labelled `LABEL (fresh)`.
 *
 * @param dir Where to write its config.
 * @param pki The PKI.
 * @param upstreams The upstreams.
 * @param target The target to copy.
 * @returns The new instance.
 */
export function startFresh(
  dir: string,
  pki: Pki,
  upstreams: Upstreams,
  target: Target,
): Promise<Target> {
  const label = `${target.label} (fresh)`;
  switch (target.kind) {
    case "mtlb":
      return startMtlb(dir, { pki, upstreams, workers: 1, label, checkout: target.checkout });
    case "haproxy":
      return startHaproxy(dir, pki, upstreams, 1, label);
    case "floor":
      return startFloor(pki, upstreams, label);
    case "nginx":
      return startNginx(dir, pki, upstreams, label);
  }
}
