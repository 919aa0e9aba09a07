#!/bin/bash
# examples/run-quickstart.sh — `make run`: the demo backend plus clawd on examples/quickstart.yaml, in the foreground.
set -eu
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

"$PY" examples/demo_backend.py 127.0.0.1:9080 &
backend=$!
cleanup() { kill "$backend" 2>/dev/null || true; wait "$backend" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BUILD/clawd" --check -c examples/quickstart.yaml
cat <<MSG

  OpenClaw is starting on http://127.0.0.1:8080 in front of a demo backend on 127.0.0.1:9080.
  Try:   curl -i http://127.0.0.1:8080/hello
         curl -i http://127.0.0.1:8080/healthz
  Stop with Ctrl-C (clawd drains in-flight requests, then exits).

MSG
"$BUILD/clawd" -c examples/quickstart.yaml &
clawd=$!
trap 'kill -TERM "$clawd" 2>/dev/null || true' INT TERM
wait "$clawd" || true
