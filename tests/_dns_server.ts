/**
 * A tiny authoritative DNS responder over UDP on 127.0.0.1 for tests: A, AAAA and
 * SRV answers that a test changes while the balancer runs, and failures on demand.
 * It uses `node:dgram`, which needs no unstable flag (`Deno.listenDatagram` does).
 *
 * @module
 */
import { createSocket, type Socket } from "node:dgram";

/** One SRV record. */
export interface TestSrv {
  priority?: number;
  weight: number;
  port: number;
  target: string;
}

/** What the server answers for one name. */
export interface TestZoneEntry {
  a?: string[];
  aaaa?: string[];
  srv?: TestSrv[];
  /** Answer SERVFAIL instead. */
  fail?: boolean;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_SRV = 33;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;

/** One query the server received. */
export interface TestDnsQuery {
  name: string;
  type: "A" | "AAAA" | "SRV" | "other";
}

/** The responder; `set()` changes an answer, `queries` records every question. */
export class TestDnsServer implements AsyncDisposable {
  readonly #socket: Socket;
  readonly #zone = new Map<string, TestZoneEntry>();
  readonly #waiters: { name: string; resolve: () => void }[] = [];
  /** Every query received, oldest first. */
  readonly queries: TestDnsQuery[] = [];

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("message", (message: Uint8Array, remote: { address: string; port: number }) => {
      const reply = this.#answer(message);
      if (reply !== undefined) socket.send(reply, remote.port, remote.address);
    });
  }

  /**
   * Starts the server on 127.0.0.1, any port.
   *
   * @returns The server.
   */
  static start(): Promise<TestDnsServer> {
    const socket = createSocket("udp4");
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => {
        socket.off("error", reject);
        resolve(new TestDnsServer(socket));
      });
    });
  }

  /** The port it answers on. */
  get port(): number {
    return this.#socket.address().port;
  }

  /** `127.0.0.1:port`, as `[server] resolver` takes it. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /**
   * Sets what `name` answers (every type at once); `undefined` makes it NXDOMAIN.
   *
   * @param name The name, without the final dot.
   * @param entry The records.
   */
  set(name: string, entry: TestZoneEntry | undefined): void {
    const key = name.toLowerCase();
    if (entry === undefined) this.#zone.delete(key);
    else this.#zone.set(key, entry);
  }

  /**
   * Resolves once the server has answered `count` more queries for `name`.
   *
   * @param name The name asked for.
   * @param count How many queries to wait for.
   * @returns When they came.
   */
  async queried(name: string, count = 1): Promise<void> {
    for (let i = 0; i < count; i++) {
      await new Promise<void>((resolve) =>
        this.#waiters.push({ name: name.toLowerCase(), resolve })
      );
    }
  }

  #answer(message: Uint8Array): Uint8Array | undefined {
    if (message.length < 12) return undefined;
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    const id = view.getUint16(0);
    const rd = view.getUint16(2) & 0x0100;
    let offset = 12;
    const labels: string[] = [];
    while (offset < message.length && message[offset] !== 0) {
      const length = message[offset]!;
      labels.push(new TextDecoder().decode(message.subarray(offset + 1, offset + 1 + length)));
      offset += 1 + length;
    }
    offset++;
    const qtype = view.getUint16(offset);
    const question = message.subarray(12, offset + 4);
    const name = labels.join(".").toLowerCase();
    const type = qtype === TYPE_A
      ? "A"
      : qtype === TYPE_AAAA
      ? "AAAA"
      : qtype === TYPE_SRV
      ? "SRV"
      : "other";
    this.queries.push({ name, type });

    const entry = this.#zone.get(name);
    const answers: Uint8Array[] = [];
    let rcode = 0;
    if (entry === undefined) rcode = RCODE_NXDOMAIN;
    else if (entry.fail === true) rcode = RCODE_SERVFAIL;
    else if (qtype === TYPE_A) {
      for (const ip of entry.a ?? []) answers.push(record(TYPE_A, ipv4(ip)));
    } else if (qtype === TYPE_AAAA) {
      for (const ip of entry.aaaa ?? []) answers.push(record(TYPE_AAAA, ipv6(ip)));
    } else if (qtype === TYPE_SRV) {
      for (const srv of entry.srv ?? []) {
        const target = encodeName(srv.target);
        const data = new Uint8Array(6 + target.length);
        const dv = new DataView(data.buffer);
        dv.setUint16(0, srv.priority ?? 10);
        dv.setUint16(2, srv.weight);
        dv.setUint16(4, srv.port);
        data.set(target, 6);
        answers.push(record(TYPE_SRV, data));
      }
    }
    const header = new Uint8Array(12);
    const hv = new DataView(header.buffer);
    hv.setUint16(0, id);
    hv.setUint16(2, 0x8000 | 0x0400 | rd | 0x0080 | rcode); // QR, AA, RD copied, RA
    hv.setUint16(4, 1);
    hv.setUint16(6, answers.length);
    const reply = concat([header, question, ...answers]);
    queueMicrotask(() => {
      for (let i = this.#waiters.length - 1; i >= 0; i--) {
        const waiter = this.#waiters[i]!;
        if (waiter.name !== name) continue;
        this.#waiters.splice(i, 1);
        waiter.resolve();
      }
    });
    return reply;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return new Promise((resolve) => this.#socket.close(() => resolve()));
  }
}

function record(type: number, data: Uint8Array): Uint8Array {
  const head = new Uint8Array(12);
  const view = new DataView(head.buffer);
  view.setUint16(0, 0xc00c); // the name of the question
  view.setUint16(2, type);
  view.setUint16(4, 1); // IN
  view.setUint32(6, 5); // TTL
  view.setUint16(10, data.length);
  return concat([head, data]);
}

function encodeName(name: string): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const label of name.replace(/\.$/, "").split(".")) {
    const bytes = new TextEncoder().encode(label);
    parts.push(Uint8Array.of(bytes.length), bytes);
  }
  parts.push(Uint8Array.of(0));
  return concat(parts);
}

function ipv4(ip: string): Uint8Array {
  return Uint8Array.from(ip.split(".").map(Number));
}

function ipv6(ip: string): Uint8Array {
  const [head = "", tail = ""] = ip.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = ip.includes("::") ? (tail === "" ? [] : tail.split(":")) : [];
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
