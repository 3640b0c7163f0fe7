import assert from "node:assert/strict";
import {
  decodeSslTlv,
  encodeProxyV2,
  encodeSslTlv,
  parseProxyV2,
  PP2_CLIENT,
  PP2_TYPE,
  PROXY_V2_SIGNATURE,
  ProxyProtocolError,
  textTlv,
  tlvText,
} from "../lib/proxy/proxy_protocol.ts";

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("encodeProxyV2() writes the IPv4 layout of the specification byte for byte", () => {
  const bytes = encodeProxyV2({
    command: "proxy",
    source: { hostname: "192.0.2.10", port: 51000 },
    destination: { hostname: "198.51.100.1", port: 443 },
  });
  assert.equal(
    hex(bytes),
    "0d0a0d0a000d0a515549540a" + // signature
      "21" + // version 2, PROXY
      "11" + // AF_INET, STREAM
      "000c" + // 12 bytes follow
      "c000020a" + "c6336401" + // 192.0.2.10, 198.51.100.1
      "c738" + "01bb", // 51000, 443
  );
});

Deno.test("encodeProxyV2() writes IPv6, LOCAL and UNSPEC headers", async (t) => {
  await t.step("IPv6 addresses: AF_INET6 with 36 address bytes", () => {
    const bytes = encodeProxyV2({
      command: "proxy",
      source: { hostname: "2001:db8::1", port: 1 },
      destination: { hostname: "::1", port: 2 },
    });
    assert.equal(bytes[13], 0x21);
    assert.equal((bytes[14]! << 8) | bytes[15]!, 36);
    assert.equal(hex(bytes.subarray(16, 32)), "20010db8000000000000000000000001");
    assert.equal(hex(bytes.subarray(32, 48)), "00000000000000000000000000000001");
  });
  await t.step("mixed families: IPv4 is mapped into IPv6", () => {
    const parsed = parseProxyV2(encodeProxyV2({
      command: "proxy",
      source: { hostname: "192.0.2.10", port: 1 },
      destination: { hostname: "2001:db8::1", port: 2 },
    }))!;
    assert.equal(parsed.header.source?.hostname, "::ffff:192.0.2.10");
    assert.equal(parsed.header.destination?.hostname, "2001:db8::1");
  });
  await t.step("IPv4-mapped IPv6 on both sides: AF_INET", () => {
    const bytes = encodeProxyV2({
      command: "proxy",
      source: { hostname: "::ffff:127.0.0.1", port: 1 },
      destination: { hostname: "::ffff:127.0.0.2", port: 2 },
    });
    assert.equal(bytes[13], 0x11);
    assert.deepEqual(parseProxyV2(bytes)?.header.source, { hostname: "127.0.0.1", port: 1 });
  });
  await t.step("LOCAL without addresses: AF_UNSPEC, no address bytes", () => {
    const bytes = encodeProxyV2({ command: "local" });
    assert.equal(hex(bytes.subarray(12)), "20000000");
    const parsed = parseProxyV2(bytes)!;
    assert.equal(parsed.header.command, "local");
    assert.equal(parsed.header.source, undefined);
    assert.equal(parsed.length, 16);
  });
});

Deno.test("parseProxyV2() reads back what encodeProxyV2() wrote, TLVs and SSL sub-TLVs included", () => {
  const header = encodeProxyV2({
    command: "proxy",
    source: { hostname: "2001:db8:0:0:1:0:0:1", port: 40000 },
    destination: { hostname: "fe80::1%eth0", port: 8443 },
    tlvs: [
      textTlv(PP2_TYPE.ALPN, "h2"),
      encodeSslTlv({
        client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN,
        verify: 0,
        tlvs: [textTlv(PP2_TYPE.SSL_VERSION, "TLSv1.3"), textTlv(PP2_TYPE.SSL_CN, "alice")],
      }),
      textTlv(PP2_TYPE.MTLB_CLIENT, "alice"),
    ],
  });
  const stream = new Uint8Array([...header, 0x68, 0x69]);
  const parsed = parseProxyV2(stream)!;
  assert.equal(parsed.length, header.length);
  assert.deepEqual(parsed.header.source, { hostname: "2001:db8::1:0:0:1", port: 40000 });
  assert.deepEqual(parsed.header.destination, { hostname: "fe80::1", port: 8443 });
  assert.equal(tlvText(parsed.header.tlvs, PP2_TYPE.ALPN), "h2");
  assert.equal(tlvText(parsed.header.tlvs, PP2_TYPE.MTLB_CLIENT), "alice");
  assert.equal(parsed.ssl?.client, 0x03);
  assert.equal(parsed.ssl?.verify, 0);
  assert.equal(tlvText(parsed.ssl!.tlvs, PP2_TYPE.SSL_VERSION), "TLSv1.3");
  assert.equal(tlvText(parsed.ssl!.tlvs, PP2_TYPE.SSL_CN), "alice");
});

Deno.test("parseProxyV2() asks for more bytes until the header is complete", () => {
  const header = encodeProxyV2({
    command: "proxy",
    source: { hostname: "10.0.0.1", port: 1 },
    destination: { hostname: "10.0.0.2", port: 2 },
    tlvs: [textTlv(PP2_TYPE.MTLB_CLIENT, "bob")],
  });
  for (let n = 0; n < header.length; n++) {
    assert.equal(parseProxyV2(header.subarray(0, n)), undefined, `${n} bytes`);
  }
  assert.equal(parseProxyV2(header)?.length, header.length);
});

Deno.test("parseProxyV2() refuses what is not a v2 header", async (t) => {
  const valid = encodeProxyV2({
    command: "proxy",
    source: { hostname: "10.0.0.1", port: 1 },
    destination: { hostname: "10.0.0.2", port: 2 },
  });
  const cases: [string, Uint8Array, RegExp][] = [
    ["plain text", new TextEncoder().encode("GET / HTTP/1.1\r\n"), /signature/],
    ["a PROXY v1 line", new TextEncoder().encode("PROXY TCP4 "), /signature/],
    [
      "version 1 in the binary form",
      Uint8Array.from(valid, (b, i) => i === 12 ? 0x11 : b),
      /version/,
    ],
    ["command 2", Uint8Array.from(valid, (b, i) => i === 12 ? 0x22 : b), /command/],
    ["family 5", Uint8Array.from(valid, (b, i) => i === 13 ? 0x51 : b), /family/],
    [
      "addresses longer than the declared length",
      Uint8Array.from(valid, (b, i) => i === 15 ? 4 : b).subarray(0, 20),
      /address bytes/,
    ],
    [
      "a TLV that overruns the header",
      new Uint8Array([...valid.subarray(0, 15), 12 + 4, ...valid.subarray(16), 0xe0, 0, 9, 1]),
      /declares 9 bytes/,
    ],
    [
      "trailing bytes that are not a TLV",
      new Uint8Array([...valid.subarray(0, 15), 12 + 2, ...valid.subarray(16), 0xe0, 0]),
      /trailing/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => parseProxyV2(bytes),
        (e: unknown) => e instanceof ProxyProtocolError && message.test(e.message),
      );
    });
  }
  assert.deepEqual(PROXY_V2_SIGNATURE, valid.subarray(0, 12));
});

Deno.test("encodeProxyV2() refuses host names, bad ports, lone addresses and oversized TLVs", () => {
  const a = { hostname: "10.0.0.1", port: 1 };
  assert.throws(
    () =>
      encodeProxyV2({
        command: "proxy",
        source: { hostname: "db.internal", port: 1 },
        destination: a,
      }),
    /IP literal/,
  );
  assert.throws(
    () =>
      encodeProxyV2({
        command: "proxy",
        source: { hostname: "10.0.0.2", port: 70000 },
        destination: a,
      }),
    /port/,
  );
  assert.throws(() => encodeProxyV2({ command: "proxy", source: a }), /both/);
  assert.throws(
    () => encodeProxyV2({ command: "proxy", tlvs: [{ type: 0xe0, value: new Uint8Array(70000) }] }),
    ProxyProtocolError,
  );
  assert.throws(
    () => encodeProxyV2({ command: "proxy", tlvs: [{ type: 256, value: new Uint8Array(1) }] }),
    /type must be a byte/,
  );
  const big = new Uint8Array(40000);
  assert.throws(
    () =>
      encodeProxyV2({
        command: "proxy",
        tlvs: [{ type: 0xe0, value: big }, { type: 0xe1, value: big }],
      }),
    /more than 65535/,
  );
});

Deno.test("decodeSslTlv() refuses a value shorter than its fixed part", () => {
  assert.throws(() => decodeSslTlv(Uint8Array.of(1, 0, 0)), ProxyProtocolError);
  assert.throws(() => encodeSslTlv({ client: 256, verify: 0, tlvs: [] }), ProxyProtocolError);
  assert.throws(() => tlvText([{ type: 1, value: Uint8Array.of(0xff) }], 1), /UTF-8/);
});
