/**
 * The exit codes of the mtlb command line.
 *
 * {@linkcode EXIT_OK} (0) on success; {@linkcode EXIT_FAILURE} (1) when the balancer
 * cannot run although its config is fine (unsupported Deno, an address in use, a
 * privileged port); {@linkcode EXIT_USAGE} (2) for everything the operator must fix
 * before anything starts: bad arguments, a bad config or certificate, missing Deno
 * permissions, files `certs` would overwrite.
 *
 * @module
 */

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the balancer could not run (unsupported runtime, cannot listen). */
export const EXIT_FAILURE = 1;
/** Exit code: bad arguments, config, certificates or permissions; nothing was started. */
export const EXIT_USAGE = 2;
