#!/usr/bin/env python3
"""Checks of the deployment files that need more than a linter (run by validate-deploy.sh).

Usage: validate_deploy.py BASE_URL

BASE_URL is a running hoardhaven (started by validate-deploy.sh) whose /metrics has been
exercised. Checks:
  - every metric name in the Grafana dashboard and the alert rules is exported by /metrics;
  - the dashboard covers what it must (rate, latency, errors, keys, live/dead bytes, merges,
    snapshots, fsync latency) and uses the provisioned data source;
  - docker-compose.yml has its services, ports, volumes, health checks and settings, and every
    HOARDHAVEN_* it sets is a real setting (listed in .env.example);
  - the Kubernetes manifests agree with each other (labels, ports, probes, volume);
  - the Dockerfile's and compose's HEALTHCHECK commands succeed against the real server.
"""

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FAILURES = []


def check(cond, what):
    if cond:
        print(f"  ok   {what}")
    else:
        print(f"  FAIL {what}")
        FAILURES.append(what)


def exported_names(base):
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def names_in(expr):
    return set(re.findall(r"\b(hoardhaven_[a-z0-9_]+)", expr))


def settings():
    known = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"#?\s*(HOARDHAVEN_[A-Z0-9_]+)=", line)
        if m:
            known.add(m.group(1))
    return known


def dashboard(exported):
    print("== Grafana dashboard")
    doc = json.loads((ROOT / "deploy/grafana/dashboards/hoardhaven.json").read_text())
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    used = set()
    for p in doc["panels"]:
        check(p["datasource"]["uid"] in uids, f"panel '{p['title']}' uses a provisioned data source")
        check(bool(p.get("targets")), f"panel '{p['title']}' has queries")
        for t in p["targets"]:
            for n in names_in(t["expr"]):
                used.add(n)
                check(n in exported, f"dashboard metric {n} is exported by /metrics")
    for var in doc.get("templating", {}).get("list", []):
        for n in names_in(json.dumps(var.get("query", ""))):
            check(n in exported, f"dashboard variable metric {n} is exported")
    for must in [
        "hoardhaven_http_requests_total",
        "hoardhaven_http_request_duration_seconds_bucket",
        "hoardhaven_engine_keys",
        "hoardhaven_engine_live_bytes",
        "hoardhaven_engine_dead_bytes",
        "hoardhaven_engine_merges_total",
        "hoardhaven_engine_snapshots_total",
        "hoardhaven_engine_fsync_duration_seconds_bucket",
    ]:
        check(must in used, f"dashboard shows {must}")


def alerts(exported):
    print("== alert rules")
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            for n in names_in(r["expr"]):
                check(n in exported, f"alert {r['alert']}: {n} is exported by /metrics")


def compose(known):
    print("== docker-compose.yml")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = doc.get("services", {})
    for s in ["hoardhaven", "prometheus", "grafana"]:
        check(s in svc, f"service {s}")
        check("healthcheck" in svc.get(s, {}), f"service {s} has a health check")
    hh = svc.get("hoardhaven", {})
    check(hh.get("build") == ".", "hoardhaven is built from the Dockerfile")
    check(".env.example" in hh.get("env_file", []), "hoardhaven reads .env.example")
    env = hh.get("environment", {})
    check(env.get("HOARDHAVEN_LISTEN") == "0.0.0.0:8080", "hoardhaven listens on 0.0.0.0:8080")
    check(env.get("HOARDHAVEN_DATA_DIR") == "/data", "hoardhaven data in /data")
    for k in env:
        check(k in known, f"{k} is a real setting (in .env.example)")
    check(any(str(p).endswith(":8080") for p in hh.get("ports", [])), "port 8080 published")
    vols = doc.get("volumes", {}) or {}
    mounts = [str(v) for v in hh.get("volumes", [])]
    check(any(m.endswith(":/data") and m.split(":")[0] in vols for m in mounts),
          "named volume mounted at /data")
    check("/healthz" in json.dumps(hh.get("healthcheck", {})), "hoardhaven health check hits /healthz")
    prom = svc.get("prometheus", {})
    check(any(str(p).endswith(":9090") for p in prom.get("ports", [])), "port 9090 published")
    check(any(str(v).startswith("./deploy/prometheus:") for v in prom.get("volumes", [])),
          "prometheus mounts deploy/prometheus")
    graf = svc.get("grafana", {})
    check(any(str(p).endswith(":3000") for p in graf.get("ports", [])), "port 3000 published")
    gv = [str(v) for v in graf.get("volumes", [])]
    check(any(v.startswith("./deploy/grafana/provisioning:") for v in gv), "grafana provisioning mounted")
    check(any(v.startswith("./deploy/grafana/dashboards:") for v in gv), "grafana dashboards mounted")
    for s in svc.values():
        for v in s.get("volumes", []):
            host = str(v).split(":")[0]
            if host.startswith("./"):
                check((ROOT / host).exists(), f"mounted path {host} exists")
            elif ":" in str(v):
                check(host in vols, f"named volume {host} declared")
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for sc in cfg["scrape_configs"] for st in sc["static_configs"] for t in st["targets"]]
    check("hoardhaven:8080" in targets, "Prometheus scrapes the compose service hoardhaven:8080")


def k8s(known):
    print("== Kubernetes manifests (consistency)")
    docs = {}
    for f in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[d["kind"]] = d
    for kind in ["StatefulSet", "Service", "ServiceMonitor"]:
        check(kind in docs, f"{kind} present")
    sts, svc, sm = docs["StatefulSet"], docs["Service"], docs["ServiceMonitor"]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selects the pods")
    check(all(svc["metadata"]["labels"].get(k) == v
              for k, v in sm["spec"]["selector"]["matchLabels"].items()), "ServiceMonitor selects the Service")
    ports = {p["name"] for p in svc["spec"]["ports"]}
    check(all(e["port"] in ports for e in sm["spec"]["endpoints"]), "ServiceMonitor port is a Service port")
    check(all(e.get("path") == "/metrics" for e in sm["spec"]["endpoints"]), "ServiceMonitor scrapes /metrics")
    c = pod["spec"]["containers"][0]
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe on /readyz")
    check("requests" in c.get("resources", {}), "resource requests set")
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    check(any(m["name"] == claim and m["mountPath"] == "/data" for m in c["volumeMounts"]),
          "persistent volume mounted at /data")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(env.get("HOARDHAVEN_DATA_DIR") == "/data", "data dir is the volume")
    for k in env:
        check(k in known, f"{k} is a real setting (in .env.example)")


def healthchecks(port):
    print("== HEALTHCHECK commands against the real server")
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    check(m is not None, "Dockerfile has an exec-form HEALTHCHECK")
    cmds = []
    if m:
        cmds.append(("Dockerfile", json.loads(m.group(1))))
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = doc["services"]["hoardhaven"]["healthcheck"]["test"]
    cmds.append(("docker-compose.yml", test[1:] if test[0] == "CMD" else test))
    for where, cmd in cmds:
        cmd = [c.replace("/8080", f"/{port}") for c in cmd]
        rc = subprocess.run(cmd, timeout=30).returncode
        check(rc == 0, f"{where} health check passes on a live server")
        dead = [c.replace(f"/{port}", "/1") for c in cmd]
        rc = subprocess.run(dead, timeout=30, stderr=subprocess.DEVNULL).returncode
        check(rc != 0, f"{where} health check fails when nothing listens")


def main():
    base = sys.argv[1]
    port = base.rsplit(":", 1)[1]
    exported = exported_names(base)
    known = settings()
    dashboard(exported)
    alerts(exported)
    compose(known)
    k8s(known)
    healthchecks(port)
    if FAILURES:
        print(f"{len(FAILURES)} deployment checks failed")
        sys.exit(1)
    print("all deployment checks passed")


if __name__ == "__main__":
    main()
