import assert from "node:assert/strict";
import { DerCache } from "../lib/identity/_der_cache.ts";

Deno.test("DerCache reads equal bytes once, whatever array holds them", () => {
  const cache = new DerCache<number>(4);
  let reads = 0;
  const read = (der: Uint8Array) => (reads++, der.length);
  const first = cache.get(new Uint8Array([1, 2, 3]), read);
  const again = cache.get(new Uint8Array([1, 2, 3]), read);
  assert.equal(reads, 1);
  assert.equal(again, first, "the same entry, so the same bytes object");
  cache.get(new Uint8Array([1, 2, 4]), read);
  assert.equal(reads, 2, "other bytes are read");
});

Deno.test("DerCache keeps its own copy of the bytes", () => {
  const cache = new DerCache<number>(4);
  const bytes = new Uint8Array([1, 2, 3]);
  const entry = cache.get(bytes, (der) => der[0]!);
  bytes[0] = 9;
  assert.deepEqual([...entry.der], [1, 2, 3]);
  assert.equal(cache.get(new Uint8Array([1, 2, 3]), () => -1).value, 1, "still found by content");
});

Deno.test("DerCache forgets the entry used least recently when full", () => {
  const cache = new DerCache<number>(2);
  let reads = 0;
  const read = () => ++reads;
  const bytes = (n: number) => new Uint8Array([n]);
  cache.get(bytes(1), read);
  cache.get(bytes(2), read);
  cache.get(bytes(1), read); // used again: 2 is now the least recent
  assert.equal(reads, 2);
  cache.get(bytes(3), read);
  assert.equal(reads, 3);
  cache.get(bytes(1), read);
  cache.get(bytes(3), read);
  assert.equal(reads, 3, "1 and 3 kept");
  cache.get(bytes(2), read);
  assert.equal(reads, 4, "2 forgotten");
});

Deno.test("DerCache remembers nothing when reading throws", () => {
  const cache = new DerCache<number>(2);
  let calls = 0;
  const failing = () => {
    calls++;
    throw new TypeError("not a certificate");
  };
  assert.throws(() => cache.get(new Uint8Array([9]), failing), TypeError);
  assert.throws(() => cache.get(new Uint8Array([9]), failing), TypeError);
  assert.equal(calls, 2);
});
