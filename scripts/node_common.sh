# Sourced by cluster_head.sh and cluster_worker.sh: the per-node ports and options of `ray start`, and starting
# it in a session of its own with a pid file. Needs ROLE (head | worker) and FOREGROUND set by the caller.

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

mkdir -p "$P7_NODE_DIR"
PIDFILE=$P7_NODE_DIR/$ROLE.pid
LOG=$P7_NODE_DIR/$ROLE.log
if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: a $ROLE node started by this script is running (pid $(cat "$PIDFILE")); scripts/cluster_stop.sh $ROLE" >&2
  exit 1
fi

# `ray start` options every node has: fixed ports (the firewall list in docs/cluster.md is exact)
node_options() {
  local opts=(--node-manager-port "$NODE_MANAGER_PORT" --object-manager-port "$OBJECT_MANAGER_PORT"
              --dashboard-agent-grpc-port "$DASHBOARD_AGENT_GRPC_PORT"
              --dashboard-agent-listen-port "$DASHBOARD_AGENT_LISTEN_PORT"
              --runtime-env-agent-port "$RUNTIME_ENV_AGENT_PORT" --metrics-export-port "$METRICS_EXPORT_PORT"
              --min-worker-port "$MIN_WORKER_PORT" --max-worker-port "$MAX_WORKER_PORT" --disable-usage-stats)
  [[ -n ${NUM_CPUS:-} ]] && opts+=(--num-cpus "$NUM_CPUS")
  [[ -n ${NODE_IP:-} ]] && opts+=(--node-ip-address "$NODE_IP")
  [[ -n ${RAY_TEMP_DIR:-} ]] && opts+=(--temp-dir "$RAY_TEMP_DIR")
  printf '%s\0' "${opts[@]}"
}

# start_node CMD...: run `ray start --block` (CMD) and return once the node is up (pid in $pid), or exit 1
start_node() {
  if [[ -z ${AWS_ENDPOINT_URL:-}${AWS_ACCESS_KEY_ID:-}${AWS_PROFILE:-} ]]; then
    echo "note: no AWS_* storage settings in this environment; trials on this node can only use s3:// with the"
    echo "      default AWS credentials chain, or a shared filesystem mounted as on every node (see docs/cluster.md)"
  fi
  if (( FOREGROUND )); then
    echo $$ >"$PIDFILE"
    exec "$@"
  fi
  # own session: cluster_stop.sh can end the node and every process it started (Ray gives each worker process
  # its own process group, but they all stay in this session)
  setsid "$@" >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  for _ in $(seq 1 240); do
    if grep -q "Ray runtime started" "$LOG" 2>/dev/null; then return 0; fi
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
  echo "error: the $ROLE node did not start within 120 s; see $LOG (pid $pid still running)" >&2
  exit 1
}
