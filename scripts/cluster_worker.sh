#!/usr/bin/env bash
# Add this machine to a tune_p7 Ray cluster as a worker node (docs/cluster.md).
#
#   scripts/cluster_worker.sh HEAD_IP[:PORT] [--foreground] [more `ray start` options]
#
# Runs `ray start --address HEAD_IP:PORT --block` in its own session in the background, records its process
# id in $P7_NODE_DIR/worker.pid (end it with scripts/cluster_stop.sh) and logs to $P7_NODE_DIR/worker.log.
# With --foreground it replaces this shell instead.
#
# Before running it:
#   - the token of the head node: RAY_AUTH_TOKEN exported, or the file RAY_AUTH_TOKEN_PATH, or a copy of the
#     head's ~/.ray/auth_token at ~/.ray/auth_token (mode 600). RAY_AUTH_MODE=token is set here.
#   - tune_p7 and its requirements installed (`pip install -e .`) in the same Python version as on the head;
#   - the storage environment exported (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#     AWS_DEFAULT_REGION for S3): Ray does not pass environment variables to other nodes, the trials running
#     here see this shell's environment. Or the shared NFS path mounted at the same place as on the head.
#
# Environment (default): NUM_CPUS (all cores), NODE_IP (Ray's guess: the address that routes to the head),
#   NODE_MANAGER_PORT (6380) OBJECT_MANAGER_PORT (6381) DASHBOARD_AGENT_GRPC_PORT (6382)
#   RUNTIME_ENV_AGENT_PORT (6383) METRICS_EXPORT_PORT (6384) DASHBOARD_AGENT_LISTEN_PORT (52365)
#   MIN_WORKER_PORT (10002) MAX_WORKER_PORT (10999), RAY_TEMP_DIR (/tmp/ray), P7_NODE_DIR (~/.ray/tune_p7).
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; fi
HEAD=$1; shift
[[ $HEAD == *:* ]] || HEAD=$HEAD:6379
FOREGROUND=0
if [[ ${1:-} == --foreground ]]; then FOREGROUND=1; shift; fi

NODE_MANAGER_PORT=${NODE_MANAGER_PORT:-6380}
OBJECT_MANAGER_PORT=${OBJECT_MANAGER_PORT:-6381}
DASHBOARD_AGENT_GRPC_PORT=${DASHBOARD_AGENT_GRPC_PORT:-6382}
RUNTIME_ENV_AGENT_PORT=${RUNTIME_ENV_AGENT_PORT:-6383}
METRICS_EXPORT_PORT=${METRICS_EXPORT_PORT:-6384}
DASHBOARD_AGENT_LISTEN_PORT=${DASHBOARD_AGENT_LISTEN_PORT:-52365}
MIN_WORKER_PORT=${MIN_WORKER_PORT:-10002}
MAX_WORKER_PORT=${MAX_WORKER_PORT:-10999}
P7_NODE_DIR=${P7_NODE_DIR:-$HOME/.ray/tune_p7}
RAY=${RAY:-ray}

export RAY_AUTH_MODE=token
if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} && ! -s $HOME/.ray/auth_token ]]; then
  cat >&2 <<EOF
error: no authentication token. The head node has it in ~/.ray/auth_token; either
    scp HEAD:.ray/auth_token ~/.ray/auth_token && chmod 600 ~/.ray/auth_token
or  export RAY_AUTH_TOKEN=<the token>      (e.g. from: ssh HEAD cat .ray/auth_token)
EOF
  exit 2
fi

host=${HEAD%:*} port=${HEAD##*:}
if ! timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  echo "error: cannot reach the head node at $HEAD (is it running, is port $port open to this machine?)" >&2
  exit 2
fi

mkdir -p "$P7_NODE_DIR"
PIDFILE=$P7_NODE_DIR/worker.pid
LOG=$P7_NODE_DIR/worker.log
if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: a worker node started by this script is running (pid $(cat "$PIDFILE")); scripts/cluster_stop.sh worker" >&2
  exit 1
fi

cmd=("$RAY" start --address "$HEAD" --block
     --node-manager-port "$NODE_MANAGER_PORT" --object-manager-port "$OBJECT_MANAGER_PORT"
     --dashboard-agent-grpc-port "$DASHBOARD_AGENT_GRPC_PORT"
     --dashboard-agent-listen-port "$DASHBOARD_AGENT_LISTEN_PORT"
     --runtime-env-agent-port "$RUNTIME_ENV_AGENT_PORT" --metrics-export-port "$METRICS_EXPORT_PORT"
     --min-worker-port "$MIN_WORKER_PORT" --max-worker-port "$MAX_WORKER_PORT"
     --disable-usage-stats)
[[ -n ${NUM_CPUS:-} ]] && cmd+=(--num-cpus "$NUM_CPUS")
[[ -n ${NODE_IP:-} ]] && cmd+=(--node-ip-address "$NODE_IP")
[[ -n ${RAY_TEMP_DIR:-} ]] && cmd+=(--temp-dir "$RAY_TEMP_DIR")
cmd+=("$@")

if [[ -z ${AWS_ENDPOINT_URL:-}${AWS_ACCESS_KEY_ID:-}${AWS_PROFILE:-} ]]; then
  echo "note: no AWS_* storage settings in this environment; trials here can only use s3:// with the default"
  echo "      AWS credentials chain, or a shared filesystem mounted as on the head (see docs/cluster.md)"
fi

if (( FOREGROUND )); then
  echo $$ >"$PIDFILE"
  exec "${cmd[@]}"
fi

setsid "${cmd[@]}" >"$LOG" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PIDFILE"
for _ in $(seq 1 240); do
  if grep -q "Ray runtime started" "$LOG" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: ray start exited; its log $LOG ends with:" >&2
    tail -n 30 "$LOG" >&2
    grep -q "InvalidAuthToken\|AuthenticationError" "$LOG" && \
      echo "hint: this token is not the head node's (compare with the head's ~/.ray/auth_token)" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.5
done
if ! grep -q "Ray runtime started" "$LOG"; then
  echo "error: the worker node did not join within 120 s; see $LOG (pid $pid still running)" >&2
  exit 1
fi
echo "Ray worker node running: pid $pid, log $LOG, joined $HEAD. Stop: scripts/cluster_stop.sh worker"
