/**
 * The shapes the dashboard's browser script (`client.ts`) works with, apart from
 * what `/status` and `/denials` answer. Types only: nothing here reaches the page.
 *
 * @module
 */

/** One plotted sample: rates per second, `null` where no rate could be computed. */
export interface Sample {
  /** When it was taken, `Date.now()`. */
  t: number;
  /** Connections being forwarded. */
  active: number;
  /** New connections per second. */
  conn: number | null;
  /** Refusals and failed handshakes per second. */
  denied: number | null;
  /** Bytes per second from clients. */
  bin: number | null;
  /** Bytes per second from upstreams. */
  bout: number | null;
}

/** What a plot can draw: a field of {@linkcode Sample}. */
export type SampleKey = Exclude<keyof Sample, "t">;

/** The counters of one poll; rates come from the difference between two polls. */
export interface Snapshot {
  /** When it was taken, `performance.now()`. */
  t: number;
  /** Connections forwarded since start. */
  accepted: number;
  /** Refusals since start. */
  denied: number;
  /** Failed handshakes since start. */
  handshake: number;
  /** Bytes from clients, all groups. */
  bin: number;
  /** Bytes from upstreams, all groups. */
  bout: number;
  /** The same per group, by name. */
  groups: Record<string, { accepted: number; bin: number; bout: number }>;
  /** Connections forwarded per upstream, by `"group host:port"`. */
  upstreams: Record<string, number>;
}

/** Rates per second of a group between two polls. */
export interface GroupRates {
  /** New connections. */
  conn: number | null;
  /** Bytes from clients. */
  bin: number | null;
  /** Bytes from upstreams. */
  bout: number | null;
}

/** Rates per second between two polls; `null` where a counter went down. */
export interface Rates extends GroupRates {
  /** Refusals and failed handshakes. */
  denied: number | null;
  /** Per group, `null` for a group new since the previous poll. */
  groups: Record<string, GroupRates | null>;
  /** New connections per upstream, by `"group host:port"`. */
  upstreams: Record<string, number | null>;
}

/** One line of a plot. */
export interface Series {
  /** The sample field drawn. */
  key: SampleKey;
  /** Its color class. */
  cls: string;
  /** Its legend. */
  label: string;
}

/** One plot: an `<svg>` of the page, its lines and how its values read. */
export interface Plot {
  /** The id of the `<svg>`; its scale and legend elements are named after it. */
  id: string;
  /** The lines drawn. */
  series: Series[];
  /** Formats a value for the scale and the legend. */
  format: (v: number | null | undefined) => string;
}

/** The optional parts of a totals card. */
export interface CardOptions {
  /** The line under the value. */
  sub?: string;
  /** The card's element id. */
  id?: string;
  /** The class of the value, for a color. */
  tone?: string;
}
