#!/usr/bin/env python3
"""Turns the benchmark suite's raw results into tables and plots for docs/benchmarks.md.

Reads, from --data (default docs/bench/data):
  hh-*.json, sweep-*.json, etcd.json   hoardhaven bench --json reports (scripts/bench/servers.sh)
  redis-*.csv                          redis-benchmark --csv output (same script)
  system-*.json                        cargo bench --bench bitcask_system -- --json (system.sh)
  engines.json                         criterion results, collected here from --criterion
Writes docs/bench/results.md (the tables) and docs/bench/*.svg (the plots).

  python3 scripts/bench/report.py [--data DIR] [--criterion target/criterion] [--out docs/bench]
"""

import argparse
import csv
import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def result(rep, test):
    if not rep:
        return None
    for r in rep["results"]:
        if r["test"] == test:
            return r
    return None


def redis(path):
    """redis-benchmark --csv: test name -> row with rps and latency columns (ms)."""
    out = {}
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                name = row.get("test", "").split()[0].upper()
                out[name] = {k: float(v) for k, v in row.items() if k != "test" and v}
    except OSError:
        pass
    return out


def collect_criterion(crit_dir, data_dir):
    """Criterion's per-benchmark estimates -> engines.json rows {group, store, ops_per_s}."""
    rows = []
    for bj in glob.glob(os.path.join(crit_dir, "**", "new", "benchmark.json"), recursive=True):
        b = load_json(bj)
        e = load_json(os.path.join(os.path.dirname(bj), "estimates.json"))
        if not b or not e:
            continue
        elems = (b.get("throughput") or {}).get("Elements", 1)
        ns = e["mean"]["point_estimate"]
        rows.append(
            {
                "group": b["group_id"],
                "store": b.get("function_id") or b.get("value_str"),
                "ns_per_iter": ns,
                "ops_per_s": elems / (ns * 1e-9),
            }
        )
    if rows:
        rows.sort(key=lambda r: (r["group"], r["store"]))
        with open(os.path.join(data_dir, "engines.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def fmt(x, digits=0):
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


def http_section(data):
    s = []
    hh = {n: load_json(os.path.join(data, f"hh-{n}.json")) for n in
          ["bitcask-never", "bitcask-always", "memory-never", "memory-always"]}
    etcd = load_json(os.path.join(data, "etcd.json"))
    rows = []
    for name, rep in list(hh.items()) + [("etcd (gateway)", etcd)]:
        if not rep:
            continue
        for r in rep["results"]:
            l = r["latency_us"]
            rows.append([name, r["test"], fmt(r["rps"]), r["errors"], l["p50"], l["p90"], l["p99"],
                         l["p999"], l["max"], fmt(r["ratio_to_healthz"], 2)])
    if rows:
        s.append("### HTTP, hoardhaven bench, 50 connections (latency in µs)\n")
        s.append(md_table(["server", "test", "req/s", "errors", "p50", "p90", "p99", "p99.9", "max",
                           "÷ healthz"], rows))
    r_np = redis(os.path.join(data, "redis-nopersist.csv"))
    r_aof = redis(os.path.join(data, "redis-aof-always.csv"))
    rrows = []
    for name, d in [("no persistence", r_np), ("appendfsync always", r_aof)]:
        for t, v in d.items():
            rrows.append([name, t, fmt(v.get("rps")), v.get("p50_latency_ms"), v.get("p99_latency_ms"),
                          v.get("max_latency_ms")])
    if rrows:
        s.append("\n### Redis 7, redis-benchmark -c 50 -d 100 (latency in ms)\n")
        s.append(md_table(["redis", "test", "req/s", "p50 ms", "p99 ms", "max ms"], rrows))

    def rps(name, test):
        r = result(hh.get(name), test)
        return r["rps"] if r else None

    def rr(name, test):
        r = result(hh.get(name), test)
        return r["ratio_to_healthz"] if r else None

    etcd_get = (result(etcd, "get") or {}).get("rps")
    etcd_put = (result(etcd, "put") or {}).get("rps")
    t = [
        ["HTTP GET ÷ static route (bitcask, sync=never)", "≥ 0.85", fmt(rr("bitcask-never", "get"), 2)],
        ["HTTP PUT sync=never ÷ static route (bitcask)", "≥ 0.70", fmt(rr("bitcask-never", "put"), 2)],
        ["HTTP GET ÷ Redis GET (no persistence)", "≥ 1", fmt(ratio(rps("bitcask-never", "get"), r_np.get("GET", {}).get("rps")), 2)],
        ["HTTP PUT sync=never ÷ Redis SET (no persistence)", "–", fmt(ratio(rps("bitcask-never", "put"), r_np.get("SET", {}).get("rps")), 2)],
        ["HTTP PUT sync=always ÷ Redis SET (appendfsync always)", "≥ 1", fmt(ratio(rps("bitcask-always", "put"), r_aof.get("SET", {}).get("rps")), 2)],
        ["HTTP GET ÷ etcd range (gateway)", "–", fmt(ratio(rps("bitcask-never", "get"), etcd_get), 2)],
        ["HTTP PUT sync=always ÷ etcd put (gateway, fsync'd)", "–", fmt(ratio(rps("bitcask-always", "put"), etcd_put), 2)],
        ["memory engine HTTP GET ÷ static route", "–", fmt(rr("memory-never", "get"), 2)],
        ["memory engine HTTP PUT sync=always ÷ Redis SET (aof always)", "–", fmt(ratio(rps("memory-always", "put"), r_aof.get("SET", {}).get("rps")), 2)],
    ]
    s.append("\n### HTTP ratios against DESIGN.md targets (same run)\n")
    s.append(md_table(["ratio", "target", "measured"], t))
    return "\n".join(s), hh, etcd, r_np, r_aof


def system_section(data):
    s = []
    for path in sorted(glob.glob(os.path.join(data, "system-*.json"))):
        rep = load_json(path)
        if not rep:
            continue
        name = os.path.basename(path)[len("system-"):-len(".json")]
        s.append(f"\n### bitcask system benchmark, {rep.get('keys', '?'):,} keys ({name})\n")
        s.append(md_table(["figure", "value", "unit"],
                          [[f["name"].strip(), fmt(f["value"], 1), f["unit"]] for f in rep["figures"]]))
        s.append("\n")
        s.append(md_table(["ratio (same run)", "measured"],
                          [[r["name"], fmt(r["ratio"], 2) + "×"] for r in rep["ratios"]]))
    return "\n".join(s)


def engines_section(rows):
    if not rows:
        return ""
    groups = sorted({r["group"] for r in rows}, key=lambda g: (re.sub(r"/.*", "", g), g))
    stores = []
    for r in rows:
        if r["store"] not in stores:
            stores.append(r["store"])
    order = ["hoardhaven-bitcask", "hoardhaven-bitcask-mmap", "hoardhaven-memory", "sled", "redb", "fjall"]
    stores.sort(key=lambda x: order.index(x) if x in order else 99)
    table = []
    for g in groups:
        line = [g]
        for st in stores:
            v = next((r["ops_per_s"] for r in rows if r["group"] == g and r["store"] == st), None)
            line.append(fmt(v))
        table.append(line)
    return ("\n### Embedded engines, criterion (operations/s, mean; one thread unless named)\n\n"
            + md_table(["workload"] + stores, table))


def plots(out, data, hh, etcd, r_np, r_aof, engines):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): no plots")
        return []
    made = []
    plt.rcParams.update({"figure.figsize": (7.5, 4.2), "font.size": 9, "svg.hashsalt": "hoardhaven"})

    # 1. throughput against concurrency
    series = {}
    for path in glob.glob(os.path.join(data, "sweep-*.json")):
        rep = load_json(path)
        m = re.match(r"sweep-(.*)-c(\d+)\.json", os.path.basename(path))
        if not rep or not m:
            continue
        for r in rep["results"]:
            if r["test"] == "healthz":
                continue
            key = f"{m.group(1).replace('hh-', '')} {r['test'].upper()}"
            series.setdefault(key, []).append((int(m.group(2)), r["rps"]))
    if series:
        fig, ax = plt.subplots()
        for k, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests/s")
        ax.set_title("hoardhaven over HTTP: throughput against concurrency")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "throughput-vs-concurrency.svg"))
        plt.close(fig)
        made.append("throughput-vs-concurrency.svg")

    # 2. latency percentiles at 50 connections
    cases = []
    for name, rep in list(hh.items()) + [("etcd", etcd)]:
        for t in ["get", "put"]:
            r = result(rep, t)
            if r:
                cases.append((f"{name.replace('bitcask', 'bc').replace('memory', 'mem')} {t}", r["latency_us"]))
    if cases:
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        pcts = ["p50", "p90", "p99", "p999"]
        w = 0.2
        for i, p in enumerate(pcts):
            ax.bar([x + i * w for x in range(len(cases))], [c[1][p] / 1000 for c in cases], w,
                   label=p.replace("p999", "p99.9"))
        ax.set_xticks([x + 1.5 * w for x in range(len(cases))])
        ax.set_xticklabels([c[0] for c in cases], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency, ms (log)")
        ax.set_title("Latency percentiles, 50 connections")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "latency-percentiles.svg"))
        plt.close(fig)
        made.append("latency-percentiles.svg")

    # 3. servers side by side
    bars = []

    def add(label, v):
        if v:
            bars.append((label, v))
    add("hoardhaven GET", (result(hh.get("bitcask-never"), "get") or {}).get("rps"))
    add("Redis GET", r_np.get("GET", {}).get("rps"))
    add("etcd GET", (result(etcd, "get") or {}).get("rps"))
    add("hoardhaven PUT never", (result(hh.get("bitcask-never"), "put") or {}).get("rps"))
    add("Redis SET no persist", r_np.get("SET", {}).get("rps"))
    add("hoardhaven PUT always", (result(hh.get("bitcask-always"), "put") or {}).get("rps"))
    add("Redis SET aof always", r_aof.get("SET", {}).get("rps"))
    add("etcd PUT (fsync)", (result(etcd, "put") or {}).get("rps"))
    if bars:
        fig, ax = plt.subplots()
        colors = ["tab:blue" if b[0].startswith("hoardhaven") else "tab:gray" for b in bars]
        ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color=colors[::-1])
        ax.set_xlabel("requests/s, 50 connections, 100 B values")
        ax.set_title("Servers side by side (one run, loopback)")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "servers-side-by-side.svg"))
        plt.close(fig)
        made.append("servers-side-by-side.svg")

    # 4. embedded engines side by side (100 B values)
    if engines:
        groups = [g for g in ["get/100B", "put/100B/nosync", "mixed90-10/100B/nosync",
                              "batch100/100B/nosync", "put/100B/sync", "put-8-writers/100B/sync"]
                  if any(r["group"] == g for r in engines)]
        stores = ["hoardhaven-bitcask", "hoardhaven-memory", "sled", "redb", "fjall"]
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        w = 0.16
        for i, st in enumerate(stores):
            vals = [next((r["ops_per_s"] for r in engines if r["group"] == g and r["store"] == st), 0)
                    for g in groups]
            ax.bar([x + i * w for x in range(len(groups))], vals, w, label=st)
        ax.set_xticks([x + 2 * w for x in range(len(groups))])
        ax.set_xticklabels(groups, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("operations/s (log)")
        ax.set_title("Embedded engines, 16 B keys, 100 B values (sled 'sync' is not an fsync)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "engines-side-by-side.svg"))
        plt.close(fig)
        made.append("engines-side-by-side.svg")
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "docs", "bench", "data"))
    ap.add_argument("--criterion", default=None, help="criterion output dir to collect")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"))
    a = ap.parse_args()
    os.makedirs(a.data, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    engines = collect_criterion(a.criterion, a.data) if a.criterion else None
    if not engines:
        engines = load_json(os.path.join(a.data, "engines.json")) or []
    http, hh, etcd, r_np, r_aof = http_section(a.data)
    machine = ""
    try:
        with open(os.path.join(a.data, "machine.txt")) as f:
            machine = f.read().strip()
    except OSError:
        pass
    body = ["# Benchmark results (generated by scripts/bench/report.py; do not edit)\n"]
    if machine:
        body.append(f"HTTP run: `{machine}`\n")
    body += [http, system_section(a.data), engines_section(engines)]
    for raw, title in [("wrk-hh-bitcask-never.txt", "wrk against the same server (bitcask, sync=never)"),
                       ("memory-bench.txt", "memory engine benchmark (crates/engine/benches/memory_bench.rs)"),
                       ("redis-memory.txt", "Redis 7 memory per key (same keys and values)")]:
        try:
            with open(os.path.join(a.data, raw)) as f:
                text = f.read().strip()
        except OSError:
            continue
        body.append(f"\n### {title}\n\n```text\n{text}\n```\n")
    made = plots(a.out, a.data, hh, etcd, r_np, r_aof, engines)
    if made:
        body.append("\n### Plots\n")
        body += [f"![{m[:-4]}]({m})\n" for m in made]
    text = "\n".join(body)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    # Splice the same tables into docs/benchmarks.md between its markers (plots are linked
    # relative to docs/ there).
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    try:
        with open(doc) as f:
            cur = f.read()
    except OSError:
        cur = ""
    if begin in cur and end in cur and os.path.abspath(a.out) == os.path.join(ROOT, "docs", "bench"):
        spliced = text.split("\n", 1)[1].replace("](", "](bench/").replace("](bench/http", "](http")
        head, rest = cur.split(begin, 1)
        tail = rest.split(end, 1)[1]
        with open(doc, "w") as f:
            f.write(head + begin + "\n" + spliced + "\n" + end + tail)
    print(f"wrote {os.path.join(a.out, 'results.md')} and {len(made)} plots")


if __name__ == "__main__":
    main()
