#!/usr/bin/env bash
# Shared helpers of the benchmark scripts: start servers on loopback, wait for them, and stop
# every process this script started (and only those) on exit, however it exits.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${HH_BIN:-$ROOT/target/release/hoardhaven}  # not HOARDHAVEN_*: the server reads those as settings
PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoardhaven-bench.XXXXXX")

cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
  [ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet)
}

# wait_http URL [TRIES]: poll until the URL answers 2xx (20 ms apart; python3, not curl, which
# a bare CI machine may lack).
wait_http() {
  local i
  for i in $(seq 1 "${2:-1000}"); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "$1" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# stop_pid PID: stop one server this script started and wait for it.
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  PIDS=("${keep[@]:-}")
}

# hh_start NAME FLAGS...: start hoardhaven on a free port; sets HH_PID and HH_URL.
hh_start() {
  local name=$1; shift
  rm -f "$WORK/$name.port"
  timeout "${SERVER_TIMEOUT:-1800}" "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" \
    --port-file "$WORK/$name.port" --log-level warn "$@" 2>"$WORK/$name.log" &
  HH_PID=$!
  PIDS+=("$HH_PID")
  local i
  for i in $(seq 1 3000); do
    [ -s "$WORK/$name.port" ] && break
    kill -0 "$HH_PID" 2>/dev/null || break
    sleep 0.02
  done
  if [ ! -s "$WORK/$name.port" ]; then
    echo "hoardhaven ($name) did not start; its log:" >&2
    cat "$WORK/$name.log" >&2
    return 1
  fi
  HH_URL="http://$(cat "$WORK/$name.port")"
  wait_http "$HH_URL/readyz"
}

machine() {
  echo "nproc=$(nproc) mem=$(free -g | awk '/^Mem:/ {print $2}')GiB kernel=$(uname -r)" \
    "disk=$(df -h "$WORK" | awk 'NR==2 {print $1}') load=\"$(uptime | sed 's/.*load average: //')\""
}

# free_port: a free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# redis_run NAME N TESTS SERVER-FLAGS...: start redis-server, run redis-benchmark (-c $CONN,
# values of 100 B, $KEYS keys, N requests of the comma-separated TESTS), write its CSV to
# $OUT/NAME.csv and stdout, stop the server.
redis_run() {
  local name=$1 n=$2 tests=$3; shift 3
  local port; port=$(free_port)
  mkdir -p "$WORK/$name"
  timeout 900 redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/$name" --save "" \
    --daemonize no --logfile "$WORK/$name.log" "$@" &
  local pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 500); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.02; done
  echo "== $name"
  timeout 900 redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONN" -d 100 -r "$KEYS" -n "$n" \
    -t "$tests" --csv | tee "$OUT/$name.csv"
  stop_pid "$pid"
}

# etcd_start: start a one-member etcd (fsyncs every write, its default); sets ETCD_PID and
# ETCD_URL (its client URL). Returns 1 when etcd is not installed.
etcd_start() {
  command -v etcd >/dev/null || { echo "etcd not installed (apt-get install -y etcd-server): skipped" >&2; return 1; }
  local cport pport; cport=$(free_port); pport=$(free_port)
  timeout 900 etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "bench=http://127.0.0.1:$pport" >"$WORK/etcd.log" 2>&1 &
  ETCD_PID=$!; PIDS+=("$ETCD_PID")
  ETCD_URL="http://127.0.0.1:$cport"
  wait_http "$ETCD_URL/health"
}
