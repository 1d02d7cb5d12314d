#!/usr/bin/env bash
# Per-pod capacity, the input of the autoscaling defaults (docs/deploy.md, "Autoscaling").
# One server process pinned to one core (a pod with cpu: 1), wrk on the other core, one-row
# requests to MODEL at rising concurrency; prints throughput, latency, the server's CPU use, and
# throughput per full core (req/s / CPU share), which stays comparable when neighbours take CPU.
#   bash tests/deploy/capacity.sh [MODEL] [SECONDS] [REPO]
# Needs wrk (apt-get install wrk) and two cores; other load on the machine skews the numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-iris-xgb}
SECONDS_PER_STEP=${2:-6}
REPO=${3:-model_repo}
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FEATURES=$(.venv/bin/python -c "import yaml,sys; c=yaml.safe_load(open('$REPO/$MODEL/config.yaml')); print(c['inputs'][0]['shape'][1])")
BODY=$(.venv/bin/python -c "print('{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,$FEATURES],\"data\":[' + ','.join(['0.5']*$FEATURES) + ']}]}')")
LUA=$(mktemp --suffix=.lua)
cat >"$LUA" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
done = function(summary, latency, requests)
  io.write(string.format("%.0f %.2f %.2f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
LUA
SERVING_WORKERS=1 taskset -c 1 .venv/bin/serving serve --model-repo "$REPO" --model-name "$MODEL" \
  --host 127.0.0.1 --http-port "$PORT" --grpc-port -1 --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -f "$LUA"' EXIT
for _ in $(seq 300); do curl -sf "127.0.0.1:$PORT/v2/health/ready" >/dev/null && break; sleep 0.2; done
URL="http://127.0.0.1:$PORT/v2/models/$MODEL/infer"
taskset -c 0 wrk -t1 -c4 -d2s -s "$LUA" "$URL" >/dev/null  # warm-up
TICK=$(getconf CLK_TCK)
printf "%-12s %8s %8s %8s %7s %9s %6s\n" concurrency req/s p50_ms p99_ms cpu_% per_core errors
for C in 1 2 4 8 16 32 64; do
  CPU0=$(awk '{print $14 + $15}' /proc/$SERVER/stat)
  T0=$(date +%s.%N)
  read -r RPS P50 P99 ERR < <(taskset -c 0 wrk -t1 -c"$C" -d"${SECONDS_PER_STEP}s" -s "$LUA" "$URL" | tail -1)
  CPU1=$(awk '{print $14 + $15}' /proc/$SERVER/stat)
  T1=$(date +%s.%N)
  UTIL=$(echo "scale=0; 100 * ($CPU1 - $CPU0) / $TICK / ($T1 - $T0)" | bc)
  PER_CORE=$(echo "scale=0; $RPS * 100 / ($UTIL + (${UTIL} == 0))" | bc)
  printf "%-12s %8s %8s %8s %7s %9s %6s\n" "$C" "$RPS" "$P50" "$P99" "$UTIL" "$PER_CORE" "$ERR"
done
