/**
 * A blocking wait for a Worker's answer: the primary of a `WorkerBalancer` answers
 * the admin endpoint's `/status` and `/metrics` synchronously, so it waits on a
 * shared flag and reads the answer off a `MessagePort` without yielding.
 *
 * @module
 */
import { receiveMessageOnPort } from "node:worker_threads";
import type { CollectReply } from "./_messages.ts";

/**
 * Waits (blocking) for the `collect` answer `id` on `port`, until `deadline`
 * (`performance.now()` time); older answers that arrived late are dropped.
 */
export function awaitAnswer(
  port: MessagePort,
  flag: Int32Array,
  id: number,
  deadline: number,
): CollectReply | undefined {
  const read = (): CollectReply | undefined => {
    for (;;) {
      const received = receiveMessageOnPort(port as never) as
        | { message: CollectReply }
        | undefined;
      if (received === undefined) return undefined;
      if (received.message.id === id) return received.message;
    }
  };
  for (;;) {
    const answer = read();
    if (answer !== undefined) return answer;
    const left = deadline - performance.now();
    if (left <= 0) return undefined;
    Atomics.wait(flag, 0, 0, left);
    Atomics.store(flag, 0, 0);
    const again = read();
    if (again !== undefined) return again;
  }
}
