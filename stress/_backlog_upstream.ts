/**
 * An upstream for the burst and quit suites: a `node:net` echo server on 127.0.0.1
 * that listens with a small accept queue (`--backlog`, default 16), so that a burst
 * of simultaneous connections overflows it and the kernel drops SYNs, as a busy or
 * badly tuned upstream does. With `--quit`, a connection whose data starts with
 * `QUIT` is answered `+OK\r\n` and closed at once, as Redis does: whatever the client
 * writes afterwards is answered by the kernel with a reset.
 *
 * With `--stall-ms=MS --stall-every=N`, the process blocks (a busy loop, as a long GC
 * pause or a CPU-bound request would) for `MS` ms after every `N` connections it
 * accepts: meanwhile nothing is accepted, the queue fills, and further SYNs are
 * dropped until it resumes.
 *
 * Prints its port on the first stdout line; exits when stdin closes.
 *
 * Usage: `deno run --allow-net=127.0.0.1 stress/_backlog_upstream.ts [--backlog=16] [--quit]
 * [--stall-ms=MS --stall-every=N]`
 *
 * @module
 */
import { createServer, type Socket } from "node:net";

const backlog = Number(
  Deno.args.find((a) => a.startsWith("--backlog="))?.slice("--backlog=".length) ?? 16,
);
const quit = Deno.args.includes("--quit");
const flag = (name: string): number =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? 0);
const stallMs = flag("stall-ms");
const stallEvery = flag("stall-every");
let accepted = 0;
const QUIT = new TextEncoder().encode("QUIT");

function startsWithQuit(chunk: Uint8Array): boolean {
  return chunk.length >= 4 && QUIT.every((byte, i) => chunk[i] === byte);
}

function serve(socket: Socket): void {
  if (stallMs > 0 && stallEvery > 0 && ++accepted % stallEvery === 0) {
    const until = performance.now() + stallMs;
    while (performance.now() < until) { /* busy: nothing is accepted meanwhile */ }
  }
  socket.setNoDelay(true);
  socket.on("error", () => {});
  socket.on("data", (chunk: Uint8Array) => {
    if (quit && startsWithQuit(chunk)) {
      socket.end("+OK\r\n", () => socket.destroy());
      return;
    }
    if (!socket.write(chunk)) socket.pause();
  });
  socket.on("drain", () => socket.resume());
  socket.on("end", () => socket.end());
}

const server = createServer({ allowHalfOpen: true }, serve);
server.listen({ host: "127.0.0.1", port: 0, backlog }, () => {
  console.log((server.address() as { port: number }).port);
});

// Stop when the parent closes our stdin (or dies).
(async () => {
  for await (const _ of Deno.stdin.readable) { /* nothing is sent on stdin */ }
  Deno.exit(0);
})();
