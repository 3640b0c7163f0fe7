import assert from "node:assert/strict";
import { MetricFamily, MetricsRegistry } from "../lib/metrics/registry.ts";

Deno.test("MetricsRegistry.render() writes HELP, TYPE and one line per series in creation order", () => {
  const registry = new MetricsRegistry();
  const accepted = registry.counter({
    name: "x_accepted_total",
    help: "Accepted.",
    labelNames: ["group"],
  });
  const active = registry.gauge({
    name: "x_active",
    help: "Active.",
    labelNames: ["group", "upstream"],
  });
  const cache = accepted.labels("cache");
  accepted.labels("web").inc(2);
  cache.inc();
  cache.inc(4);
  active.labels("cache", "10.0.0.1:6379").set(3);
  assert.equal(
    registry.render(),
    [
      "# HELP x_accepted_total Accepted.",
      "# TYPE x_accepted_total counter",
      'x_accepted_total{group="cache"} 5',
      'x_accepted_total{group="web"} 2',
      "# HELP x_active Active.",
      "# TYPE x_active gauge",
      'x_active{group="cache",upstream="10.0.0.1:6379"} 3',
      "",
    ].join("\n"),
  );
});

Deno.test("MetricFamily.labels() returns the same series for the same values", () => {
  const registry = new MetricsRegistry();
  const family = registry.counter({ name: "x_total", help: "X.", labelNames: ["a", "b"] });
  const series = family.labels("1", "2");
  series.inc();
  assert.equal(family.labels("1", "2"), series);
  assert.equal(family.get("1", "2"), 1);
  assert.equal(family.get("2", "1"), undefined, "order of values matters");
  assert.throws(() => family.labels("1"), TypeError);
  assert.throws(() => family.get("1", "2", "3"), TypeError);
});

Deno.test("MetricFamily renders escaped label values and help text", () => {
  const registry = new MetricsRegistry();
  registry.gauge({ name: "x", help: 'Line one\nback\\slash "q"', labelNames: ["v"] })
    .labels('a"b\\c\nd').set(1);
  assert.equal(
    registry.render(),
    '# HELP x Line one\\nback\\\\slash "q"\n# TYPE x gauge\nx{v="a\\"b\\\\c\\nd"} 1\n',
  );
});

Deno.test("MetricFamily renders special values as Prometheus spells them", () => {
  const registry = new MetricsRegistry();
  const g = registry.gauge({ name: "g", help: "G.", labelNames: ["k"] });
  g.labels("inf").set(Infinity);
  g.labels("ninf").set(-Infinity);
  g.labels("nan").set(NaN);
  g.labels("frac").set(0.25);
  const lines = registry.render().split("\n");
  assert.deepEqual(lines.slice(2, 6), [
    'g{k="inf"} +Inf',
    'g{k="ninf"} -Inf',
    'g{k="nan"} NaN',
    'g{k="frac"} 0.25',
  ]);
});

Deno.test("MetricFamily without labels renders its single series, at 0 before any change", () => {
  const registry = new MetricsRegistry();
  const g = registry.gauge({ name: "up", help: "Up." });
  assert.equal(registry.render(), "# HELP up Up.\n# TYPE up gauge\nup 0\n");
  g.labels().inc(3);
  g.labels().dec();
  assert.equal(g.get(), 2);
});

Deno.test("CounterSeries.inc() refuses negative and non-finite amounts", () => {
  const series = new MetricsRegistry().counter({ name: "c_total", help: "C." }).labels();
  assert.throws(() => series.inc(-1), RangeError);
  assert.throws(() => series.inc(Infinity), RangeError);
  assert.throws(() => series.inc(NaN), RangeError);
  series.inc(0);
  assert.equal(series.value, 0);
});

Deno.test("MetricFamily.remove() and clear() drop series from the output", () => {
  const registry = new MetricsRegistry();
  const family = registry.gauge({ name: "g", help: "G.", labelNames: ["k"] });
  const kept = family.labels("a");
  family.labels("b").set(2);
  kept.set(1);
  assert.equal(family.remove("b"), true);
  assert.equal(family.remove("b"), false);
  assert.equal(registry.render(), '# HELP g G.\n# TYPE g gauge\ng{k="a"} 1\n');
  family.clear();
  assert.equal(registry.render(), "# HELP g G.\n# TYPE g gauge\n");
  kept.set(5); // a detached series no longer shows
  assert.equal(family.get("a"), undefined);
});

Deno.test("MetricsRegistry rejects duplicate and malformed names", () => {
  const registry = new MetricsRegistry();
  registry.counter({ name: "a_total", help: "A." });
  assert.throws(() => registry.gauge({ name: "a_total", help: "Again." }), /already registered/);
  assert.throws(() => registry.counter({ name: "1bad", help: "" }), TypeError);
  assert.throws(() => registry.counter({ name: "has-dash", help: "" }), TypeError);
  assert.throws(
    () => registry.counter({ name: "ok_total", help: "", labelNames: ["__reserved"] }),
    TypeError,
  );
  assert.throws(
    () => registry.counter({ name: "ok_total", help: "", labelNames: ["a", "a"] }),
    /repeats/,
  );
  assert.throws(() => new MetricFamily("gauge", { name: "x y", help: "" }), TypeError);
});

Deno.test("MetricsRegistry.onCollect() hooks run before each render until disposed", () => {
  const registry = new MetricsRegistry();
  const gauge = registry.gauge({ name: "depth", help: "Depth." });
  let depth = 1;
  let runs = 0;
  const hook = registry.onCollect(() => {
    runs++;
    gauge.labels().set(depth);
  });
  assert.match(registry.render(), /^depth 1$/m);
  depth = 7;
  assert.match(registry.render(), /^depth 7$/m);
  hook[Symbol.dispose]();
  depth = 9;
  assert.match(registry.render(), /^depth 7$/m);
  assert.equal(runs, 2);
  assert.equal(registry.family("depth"), gauge);
});
