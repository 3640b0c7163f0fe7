/**
 * Watches a set of files and calls back, debounced, when one changes: the
 * `[server] watch = true` reload trigger.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock, type TimerId } from "../core/clock.ts";

const log = getLogger(["mtlb", "watch"]);

/** Options of {@linkcode FileWatcher}. */
export interface FileWatcherOptions {
  /**
   * Milliseconds without a further change before the callback runs, so that a
   * file written in several steps (or several files replaced together) gives one
   * call.
   *
   * @default {500}
   */
  debounce?: number;
  /**
   * Time source of the debounce timer.
   *
   * @default {systemClock}
   */
  clock?: Clock;
}

/**
 * Calls `onChange` once the watched files have stopped changing for `debounce`
 * milliseconds. After every call it watches the files again, from the current
 * `paths()`: files replaced by a rename (editors, `kubectl` ConfigMap updates,
 * certificate renewals) are followed, and a reload that names other files is
 * watched by its new list. Reads (`access` events) are ignored.
 *
 * A path that does not exist when the watch is set up is retried after
 * `debounce`; changes made while `onChange` runs are not seen. Each time a watch is
 * set up the watcher dispatches a `"watching"` event.
 *
 * @example Usage
 * ```ts ignore
 * import { FileWatcher } from "./file_watcher.ts";
 *
 * await using watcher = new FileWatcher(() => ["config/lb.toml"], async () => {
 *   console.log("changed");
 * });
 * watcher.start();
 * ```
 */
export class FileWatcher extends EventTarget implements AsyncDisposable {
  #paths: () => readonly string[];
  #onChange: () => unknown;
  #debounce: number;
  #clock: Clock;
  #watcher: Deno.FsWatcher | undefined;
  #timer: TimerId | undefined;
  #closed = false;
  #running: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  /**
   * Creates a watcher; nothing is watched until {@linkcode FileWatcher.start}.
   *
   * @param paths The files to watch, read again before each watch is set up.
   * @param onChange Called after changes; awaited before watching again. Errors it
   *   throws are logged.
   * @param options Debounce and clock.
   * @throws {RangeError} When `debounce` is negative or not finite.
   */
  constructor(
    paths: () => readonly string[],
    onChange: () => unknown,
    options: FileWatcherOptions = {},
  ) {
    const debounce = options.debounce ?? 500;
    if (!(debounce >= 0 && Number.isFinite(debounce))) {
      throw new RangeError(
        `Cannot watch files: debounce must be a non-negative number of milliseconds, received ${debounce}`,
      );
    }
    super();
    this.#paths = paths;
    this.#onChange = onChange;
    this.#debounce = debounce;
    this.#clock = options.clock ?? systemClock;
  }

  /** Starts watching. Calling it again does nothing. */
  start(): void {
    this.#running ??= this.#run();
  }

  /**
   * Stops watching; waits for a running `onChange` to finish.
   *
   * @returns When the watcher has stopped.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#closeWatcher();
    this.#wake?.();
    await this.#running;
  }

  /**
   * Same as {@linkcode FileWatcher.close}.
   *
   * @returns When the watcher has stopped.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      const paths = [...new Set(this.#paths())];
      let changed = false;
      try {
        this.#watcher = Deno.watchFs(paths, { recursive: false });
      } catch (error) {
        log.warn("Cannot watch {paths}: {error}; retrying", { paths, error });
        await this.#sleep();
        continue;
      }
      log.debug("Watching {paths}", { paths });
      this.dispatchEvent(new Event("watching"));
      try {
        for await (const event of this.#watcher) {
          if (event.kind === "access") continue;
          log.debug("{kind} {paths}", { kind: event.kind, paths: event.paths });
          changed = true;
          if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
          this.#timer = this.#clock.setTimeout(() => {
            this.#timer = undefined;
            this.#closeWatcher();
          }, this.#debounce);
        }
      } catch (error) {
        if (!this.#closed) log.warn("Watching {paths} failed: {error}", { paths, error });
      }
      this.#closeWatcher();
      if (this.#closed) break;
      if (!changed) {
        await this.#sleep();
        continue;
      }
      log.info("Files changed: {paths}", { paths });
      try {
        await this.#onChange();
      } catch (error) {
        log.error("Reacting to a file change failed: {error}", { error });
      }
    }
  }

  #closeWatcher(): void {
    try {
      this.#watcher?.close();
    } catch {
      // Already closed.
    }
    this.#watcher = undefined;
  }

  #sleep(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.#wake = undefined;
        if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
        this.#timer = undefined;
        resolve();
      };
      this.#wake = done;
      this.#timer = this.#clock.setTimeout(done, Math.max(this.#debounce, 100));
    });
  }
}
