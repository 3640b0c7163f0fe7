/**
 * The values a run measured: one per figure, target and round.
 *
 * @module
 */

/**
 * The median of some values.
 *
 * @param values At least one value.
 * @returns Their median.
 */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Samples per metric and target, one per round. */
export class Samples {
  #values = new Map<string, number[]>();

  /**
   * Records a round's value.
   *
   * @param metric The figure (`set`, `bulk`, ...).
   * @param target The target's label.
   * @param value The value.
   */
  add(metric: string, target: string, value: number): void {
    const key = `${metric}\u0000${target}`;
    const list = this.#values.get(key) ?? [];
    list.push(value);
    this.#values.set(key, list);
  }

  /**
   * @param metric The figure.
   * @param target The target's label.
   * @returns Its values, one per round so far.
   */
  get(metric: string, target: string): number[] {
    return this.#values.get(`${metric}\u0000${target}`) ?? [];
  }

  /**
   * @param metric The figure.
   * @param target The target's label.
   * @returns The median of its values, or undefined without any.
   */
  median(metric: string, target: string): number | undefined {
    const values = this.get(metric, target);
    return values.length === 0 ? undefined : median(values);
  }
}
