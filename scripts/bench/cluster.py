#!/usr/bin/env python3
"""A 3-node hoardhaven cluster beside a 3-member etcd cluster on loopback, in one run.

1. Throughput and latency: durable PUT and linearizable GET at each connection count, driven
   by the same load tool (`hoardhaven bench`, `--target etcd` for etcd's v3 JSON gateway),
   both sent to the leader (etcd: the member the client is given; it forwards as ours do).
2. Failover: SIGKILL of the hoardhaven leader, then the time until a write through a survivor
   is acknowledged (writes retried every 5 ms against both survivors); the killed node is
   restarted and caught up before the next kill. The p50 and max over KILLS kills.

Run through scripts/bench/cluster.sh (it builds the release binary and takes the machine's
load average). Writes OUT/cluster.json and prints a Markdown table.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SECRET = "bench-cluster-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None, timeout=2.0):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def wait(what, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


class HhNode:
    def __init__(self, binary, work, i):
        self.binary, self.i = binary, i
        self.dir = os.path.join(work, f"hh{i}")
        self.port, self.peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, entry):
        args = [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir,
                "--node-id", str(self.i), "--peer-listen", f"127.0.0.1:{self.peer}",
                "--cluster-secret", SECRET, "--log-level", os.environ.get("HH_LOG", "warn")] + entry
        self.log = open(self.dir + ".log", "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)

    def status(self):
        code, body = http("GET", self.url + "/cluster", timeout=1.0)
        return json.loads(body) if code == 200 else None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def hh_cluster(binary, work):
    nodes = [HhNode(binary, work, i) for i in (1, 2, 3)]
    nodes[0].start(["--cluster-init"])
    wait("node 1 ready", lambda: http("GET", nodes[0].url + "/readyz")[0] == 200)
    for n in nodes[1:]:
        n.start(["--join", f"http://127.0.0.1:{nodes[0].peer}"])
        wait(f"node {n.i} ready", lambda n=n: http("GET", n.url + "/readyz")[0] == 200)
    return nodes


def leader_of(nodes):
    for n in nodes:
        s = n.status()
        if s and s.get("leader"):
            lid = s["leader"]["node_id"]
            return next(x for x in nodes if x.i == lid)
    return None


def all_caught_up(nodes):
    st = [n.status() for n in nodes]
    if any(s is None or not s.get("leader") for s in st):
        return False
    leaders = {s["leader"]["node_id"] for s in st}
    applied = {s["applied_index"] for s in st}
    return len(leaders) == 1 and len(applied) == 1


def etcd_cluster(work):
    members = []
    for i in (1, 2, 3):
        members.append({"name": f"e{i}", "client": free_port(), "peer": free_port()})
    initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in members)
    procs = []
    for m in members:
        d = os.path.join(work, m["name"])
        log = open(d + ".log", "ab")
        procs.append(subprocess.Popen([
            "etcd", "--name", m["name"], "--data-dir", d,
            "--listen-client-urls", f"http://127.0.0.1:{m['client']}",
            "--advertise-client-urls", f"http://127.0.0.1:{m['client']}",
            "--listen-peer-urls", f"http://127.0.0.1:{m['peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m['peer']}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "bench"], stdout=subprocess.DEVNULL, stderr=log))
    for m in members:
        url = f"http://127.0.0.1:{m['client']}"
        wait(f"etcd {m['name']}", lambda url=url: http("GET", url + "/health")[0] == 200)
    return procs, [f"http://127.0.0.1:{m['client']}" for m in members]


def etcd_leader(urls):
    for u in urls:
        code, body = http("POST", u + "/v3/maintenance/status", b"{}")
        if code == 200:
            s = json.loads(body)
            if s.get("leader") == s.get("header", {}).get("member_id"):
                return u
    return urls[0]


def bench(binary, target, url, conns, tests, args, label, out):
    path = os.path.join(out, f"{label}.json")
    cmd = [binary, "bench", "-q", "--target", target, "--url", url, "-c", str(conns),
           "-t", tests, "--keys", str(args.keys), "--duration", args.duration,
           "--rounds", str(args.rounds), "--label", label, "--json", path]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=900)
    with open(path) as f:
        return {r["test"]: r for r in json.load(f)["results"]}


def failover(nodes, kills):
    times = []
    for k in range(kills):
        wait("all nodes caught up", lambda: all_caught_up(nodes), 120)
        leader = leader_of(nodes)
        survivors = [n for n in nodes if n is not leader]
        t0 = time.monotonic()
        leader.kill()
        attempt = 0
        while True:
            n = survivors[attempt % 2]
            attempt += 1
            code, _ = http("PUT", f"{n.url}/kv/failover-{k}", b"x", timeout=10.0)
            if code in (200, 201, 204):
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit("no write acknowledged within 120 s of the kill")
            time.sleep(0.005)
        times.append(time.monotonic() - t0)
        print(f"  kill {k + 1}: leader n{leader.i}, first ack after {times[-1] * 1000:.0f} ms",
              file=sys.stderr)
        leader.start([])
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--conns", default="1 16 64")
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--skip-etcd", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hh-cluster-bench.")
    results = {"load_before": open("/proc/loadavg").read().split()[:3], "rows": []}
    nodes, etcd = [], None
    try:
        nodes = hh_cluster(args.bin, work)
        wait("a leader", lambda: leader_of(nodes) is not None)
        if not args.skip_etcd:
            etcd = etcd_cluster(work)
        for c in args.conns.split():
            hl = leader_of(nodes)
            row = {"connections": int(c)}
            for t in ("put", "get"):
                r = bench(args.bin, "hoardhaven", hl.url, c, t, args, f"cluster-hh-{t}-c{c}", args.out)
                row[f"hh_{t}"] = r[t]
                if etcd:
                    eu = etcd_leader(etcd[1])
                    r = bench(args.bin, "etcd", eu, c, t, args, f"cluster-etcd-{t}-c{c}", args.out)
                    row[f"etcd_{t}"] = r[t]
            results["rows"].append(row)
        if etcd:
            for p in etcd[0]:
                p.terminate()
            for p in etcd[0]:
                p.wait(timeout=30)
            etcd = None
        if args.kills > 0:
            times = failover(nodes, args.kills)
            results["failover_ms"] = [round(t * 1000, 1) for t in times]
            results["failover_p50_ms"] = round(statistics.median(times) * 1000, 1)
            results["failover_max_ms"] = round(max(times) * 1000, 1)
    finally:
        for n in nodes:
            n.stop()
        if etcd:
            for p in etcd[0]:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = open("/proc/loadavg").read().split()[:3]
    with open(os.path.join(args.out, "cluster.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| connections | test | hoardhaven req/s | p99 ms | etcd req/s | p99 ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        for t in ("put", "get"):
            h = row[f"hh_{t}"]
            e = row.get(f"etcd_{t}")
            hp99 = h["latency_us"]["p99"] / 1000
            if e:
                ep99 = e["latency_us"]["p99"] / 1000
                print(f"| {row['connections']} | {t} | {h['rps']:,.0f} | {hp99:.1f} | "
                      f"{e['rps']:,.0f} | {ep99:.1f} | {h['rps'] / e['rps']:.2f} |")
            else:
                print(f"| {row['connections']} | {t} | {h['rps']:,.0f} | {hp99:.1f} | – | – | – |")
    if "failover_p50_ms" in results:
        print(f"\nfailover (leader SIGKILL -> first acknowledged write through a survivor), "
              f"{len(results['failover_ms'])} kills: p50 {results['failover_p50_ms']} ms, "
              f"max {results['failover_max_ms']} ms")
    print(f"load average before {' '.join(results['load_before'])}, "
          f"after {' '.join(results['load_after'])}")


if __name__ == "__main__":
    main()
