/**
 * What was read from DER bytes, remembered by their content: a client that connects
 * again presents the same certificates, whose bytes are then compared in full instead
 * of parsed again.
 *
 * @module
 */
import { sameBytes } from "./_x509.ts";

/**
 * A bounded map from DER bytes (by content) to what was read from them; the entry used
 * least recently goes when it is full. It keeps its own copy of the bytes.
 */
export class DerCache<T> {
  readonly #entries = new Map<number, { der: Uint8Array; value: T }>();
  readonly #size: number;

  /**
   * Creates an empty cache.
   *
   * @param size The most entries kept.
   */
  constructor(size: number) {
    this.#size = size;
  }

  /**
   * What `read` made of bytes equal to `der`, remembered, or `read(der)` now.
   *
   * @param der The bytes.
   * @param read Reads them (the cache's copy); what it throws is thrown, and nothing is
   *   remembered.
   * @returns The value, and the cache's copy of the bytes (the same object on every
   *   hit, for callers that remember more by identity).
   */
  get(der: Uint8Array, read: (der: Uint8Array) => T): { der: Uint8Array; value: T } {
    const key = hashBytes(der);
    const known = this.#entries.get(key);
    if (known !== undefined && sameBytes(known.der, der)) {
      // Now the most recently used: moved to the end of the eviction order.
      this.#entries.delete(key);
      this.#entries.set(key, known);
      return known;
    }
    const own = der.slice();
    const entry = { der: own, value: read(own) };
    // A colliding entry stays: the newcomer is read on every call, and still correct.
    if (known === undefined) {
      if (this.#entries.size >= this.#size) {
        this.#entries.delete(this.#entries.keys().next().value!);
      }
      this.#entries.set(key, entry);
    }
    return entry;
  }
}

/** FNV-1a of `bytes`, 32 bits: a key, not a check (the bytes are compared in full). */
function hashBytes(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
  return hash >>> 0;
}
