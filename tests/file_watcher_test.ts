import assert from "node:assert/strict";
import { join } from "node:path";
import { FileWatcher } from "../lib/control/file_watcher.ts";

Deno.test("FileWatcher calls back once per burst of changes, and follows a replaced file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mtlb_watch_" });
  try {
    const path = join(dir, "lb.toml");
    await Deno.writeTextFile(path, "one");
    const changes: string[] = [];
    let changed = Promise.withResolvers<void>();
    await using watcher = new FileWatcher(() => [path], async () => {
      changes.push(await Deno.readTextFile(path));
      changed.resolve();
    }, { debounce: 250 });
    const watching = () =>
      new Promise((resolve) => watcher.addEventListener("watching", resolve, { once: true }));

    let ready = watching();
    watcher.start();
    await ready;
    // Two writes in a row: one call, after both.
    ready = watching();
    await Deno.writeTextFile(path, "two");
    await Deno.writeTextFile(path, "three", { append: true });
    await changed.promise;
    assert.deepEqual(changes, ["twothree"]);

    // Replaced by a rename, as editors and certificate renewals do: still watched.
    await ready;
    changed = Promise.withResolvers<void>();
    const temp = join(dir, "lb.toml.new");
    await Deno.writeTextFile(temp, "four");
    await Deno.rename(temp, path);
    await changed.promise;
    assert.deepEqual(changes, ["twothree", "four"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileWatcher refuses a negative debounce", () => {
  assert.throws(() => new FileWatcher(() => [], () => {}, { debounce: -1 }), RangeError);
});
