import assert from "node:assert/strict";
import "reflect-metadata";
import { Name } from "@peculiar/x509";
import { canonicalName, nameText, UNREADABLE_NAME } from "../lib/identity/_name_text.ts";

function length(n: number): number[] {
  if (n < 0x80) return [n];
  const octets: number[] = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) octets.unshift(rest % 256);
  return [0x80 | octets.length, ...octets];
}

function tlv(tag: number | number[], body: number[]): number[] {
  return [...(Array.isArray(tag) ? tag : [tag]), ...length(body.length), ...body];
}

function arc(value: number): number[] {
  const octets = [value % 128];
  for (let rest = Math.floor(value / 128); rest > 0; rest = Math.floor(rest / 128)) {
    octets.unshift((rest % 128) | 0x80);
  }
  return octets;
}

function oid(dotted: string): number[] {
  const [first, second, ...rest] = dotted.split(".").map(Number) as [number, number, ...number[]];
  return tlv(0x06, [...arc(first * 40 + second), ...rest.flatMap(arc)]);
}

const utf8 = (text: string) => tlv(0x0c, [...new TextEncoder().encode(text)]);
const printable = (text: string) => tlv(0x13, Array.from(text, (c) => c.charCodeAt(0)));
const attribute = (type: string, value: number[]) => tlv(0x30, [...oid(type), ...value]);
const rdn = (...attributes: number[][]) => tlv(0x31, attributes.flat());
const name = (...rdns: number[][]) => new Uint8Array(tlv(0x30, rdns.flat()));

/** What `@peculiar/x509` renders, the text mtlb has always shown. */
function reference(der: Uint8Array): string {
  try {
    return new Name(der.slice()).toString();
  } catch {
    return UNREADABLE_NAME;
  }
}

Deno.test("nameText() writes short names, RDNs most specific last, multi-valued RDNs with +", () => {
  const der = name(
    rdn(attribute("2.5.4.6", printable("DE"))),
    rdn(attribute("2.5.4.10", utf8("Example")), attribute("2.5.4.11", utf8("Ops"))),
    rdn(attribute("2.5.4.3", utf8("Example CA"))),
    rdn(attribute("1.3.6.1.4.1.311.60.2.1.3", printable("DE"))),
  );
  assert.equal(nameText(der), "C=DE, O=Example+OU=Ops, CN=Example CA, 1.3.6.1.4.1.311.60.2.1.3=DE");
  assert.equal(nameText(name()), "");
});

Deno.test("nameText() escapes as RFC 4514 and renders values that are not strings as hex", async (t) => {
  const cases: [string, number[], string][] = [
    ["specials", utf8('a,b+c"d\\e<f>g;h'), 'CN=a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h'],
    ["leading space and trailing space", utf8(" x "), "CN=\\ x\\ "],
    ["leading #", utf8("#x"), "CN=\\#x"],
    ["the first control character only", utf8("a\tb\nc"), "CN=a\\09b\nc"],
    ["UTF-8", utf8("Zürich 日本 😀"), "CN=Zürich 日本 😀"],
    ["invalid UTF-8 as Latin-1", tlv(0x0c, [0x41, 0xff]), "CN=A\u00ff"],
    ["a byte order mark kept", tlv(0x0c, [0xef, 0xbb, 0xbf, 0x41]), "CN=\ufeffA"],
    ["TeletexString as Latin-1", tlv(0x14, [0x4d, 0xfc]), "CN=M\u00fc"],
    ["IA5String", tlv(0x16, [0x61, 0x40, 0x62]), "CN=a@b"],
    ["BMPString", tlv(0x1e, [0x00, 0x41, 0x65, 0xe5]), "CN=A\u65e5"],
    ["UniversalString", tlv(0x1c, [0, 0, 0, 0x41, 0, 0, 0x65, 0xe5]), "CN=A\u65e5"],
    ["INTEGER", tlv(0x02, [0x01, 0x02]), "CN=#02020102"],
    ["a multi-octet tag", tlv([0x9f, 0x1f], [0xaa]), "CN=#9f1f01aa"],
    ["NULL", tlv(0x05, []), "CN="],
    ["a SEQUENCE", tlv(0x30, tlv(0x02, [5])), "CN=#3003020105"],
  ];
  for (const [what, value, text] of cases) {
    await t.step(what, () => {
      const der = name(rdn(attribute("2.5.4.3", value)));
      assert.equal(nameText(der), text);
      assert.equal(nameText(der), reference(der));
    });
  }
});

Deno.test("nameText() is (an unreadable name) for what is not a DER Name", async (t) => {
  const cases: [string, Uint8Array][] = [
    ["not a SEQUENCE", new Uint8Array(rdn(attribute("2.5.4.3", utf8("a"))))],
    ["an RDN that is not a SET", name(tlv(0x30, attribute("2.5.4.3", utf8("a"))))],
    ["an attribute without a value", name(rdn(tlv(0x30, oid("2.5.4.3"))))],
    ["an unterminated type", name(rdn(tlv(0x30, [...tlv(0x06, [0x55, 0x84]), ...utf8("a")])))],
    ["a BMPString of odd length", name(rdn(attribute("2.5.4.3", tlv(0x1e, [0, 0x41, 0]))))],
    ["truncated", name(rdn(attribute("2.5.4.3", utf8("abc")))).subarray(0, 8)],
  ];
  for (const [what, der] of cases) {
    await t.step(what, () => assert.equal(nameText(der), UNREADABLE_NAME));
  }
});

Deno.test("nameText() renders well-formed Names as @peculiar/x509 does", () => {
  let seed = 20_240_601;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const count = (n: number) => Math.floor(random() * n);
  const bytes = (n: number) => Array.from({ length: count(n) }, () => count(256));
  const types = [
    ...["3", "7", "8", "10", "11", "6", "42", "43", "4", "12", "5"].map((n) => `2.5.4.${n}`),
    "0.9.2342.19200300.100.1.25",
    "1.2.840.113549.1.9.1",
    "2.999.4096",
    "1.3.6.1.4.1.99999.1",
  ];
  const characters = [...' ,+"\\<>;#=\r\n\t\u0000\u00a0é€日😀abcXYZ019'];
  const text = () => Array.from({ length: count(8) }, () => pick(characters)).join("");
  const values: (() => number[])[] = [
    () => utf8(text()),
    () => tlv(0x0c, bytes(8)),
    () => tlv(pick([0x13, 0x14, 0x16]), bytes(8)),
    () =>
      tlv(0x1e, Array.from(text()).flatMap((c) => [c.charCodeAt(0) >> 8, c.charCodeAt(0) & 0xff])),
    () =>
      tlv(
        0x1c,
        Array.from(text()).flatMap((c) => {
          const code = c.codePointAt(0)!;
          return [0, code >> 16, (code >> 8) & 0xff, code & 0xff];
        }),
      ),
    () => tlv(pick([0x02, 0x04, 0x12, 0x1a, 0x80, 0x41]), [1, ...bytes(4)]),
    () => tlv(pick([0x30, 0xa0]), [...utf8(text()), ...tlv(0x02, [1])]),
    () => tlv(0x05, []),
  ];
  for (let i = 0; i < 2_000; i++) {
    const rdns = Array.from({ length: count(4) }, () =>
      rdn(
        ...Array.from(
          { length: 1 + (random() < 0.2 ? 1 : 0) },
          () => attribute(pick(types), pick(values)()),
        ),
      ));
    const der = name(...rdns);
    assert.equal(nameText(der), reference(der), `name ${Array.from(der).join(",")}`);
  }
});

Deno.test("canonicalName() folds case and runs of spaces", () => {
  assert.equal(canonicalName("  CN=Example   CA, O=Corp "), "cn=example ca, o=corp");
});
