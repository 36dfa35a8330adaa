#!/usr/bin/env bash
# Start the Ray head node of a multi-machine tune_p7 search on this machine (docs/cluster.md).
#
#   scripts/cluster_head.sh [--foreground] [more `ray start` options]
#
# Runs `ray start --head --block` in its own session in the background, records its process id in
# $P7_NODE_DIR/head.pid (end it with scripts/cluster_stop.sh) and logs to $P7_NODE_DIR/head.log. With
# --foreground it replaces this shell instead (for systemd, tmux, ...): stop it with Ctrl-C or SIGTERM.
#
# Every port is fixed so that the firewall list in docs/cluster.md is exact. Environment (default):
#   NUM_CPUS (all cores)          CPUs Ray may use here; leave one for the driver on a busy head
#   NODE_IP (Ray's guess)         this machine's address as the other machines reach it
#   GCS_PORT (6379)               cluster address; open to the workers
#   DASHBOARD_PORT (8265)         dashboard + job API, listens on 127.0.0.1 only: reach it through `ssh -L`
#   RAY_CLIENT_SERVER_PORT (10001) Ray Client server (unused by tune_p7): never open it
#   NODE_MANAGER_PORT (6380) OBJECT_MANAGER_PORT (6381) DASHBOARD_AGENT_GRPC_PORT (6382)
#   RUNTIME_ENV_AGENT_PORT (6383) METRICS_EXPORT_PORT (6384) DASHBOARD_AGENT_LISTEN_PORT (52365)
#   MIN_WORKER_PORT (10002) MAX_WORKER_PORT (10999)   one port per Ray worker process
#   RAY_TEMP_DIR (/tmp/ray)       Ray's session folders, logs and sockets
#   P7_NODE_DIR (~/.ray/tune_p7)  pid and log files of these scripts
#
# Token authentication (Ray's answer to CVE-2023-48022) is always on: RAY_AUTH_MODE=token. The token is
# RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (generated here if missing, mode 600).
# Every worker node, driver and `ray job submit` needs the same token.
#
# Storage: Ray passes no environment variables to other nodes. Export the storage settings (AWS_ENDPOINT_URL,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION for S3) before running this script on the head
# AND cluster_worker.sh on every worker; or mount the same NFS path on every machine.
set -euo pipefail

FOREGROUND=0
if [[ ${1:-} == --foreground ]]; then FOREGROUND=1; shift; fi
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi

GCS_PORT=${GCS_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
RAY_CLIENT_SERVER_PORT=${RAY_CLIENT_SERVER_PORT:-10001}
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
if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
  if [[ ! -s $HOME/.ray/auth_token ]]; then
    "$RAY" get-auth-token --generate >/dev/null   # writes ~/.ray/auth_token
  fi
  chmod 600 "$HOME/.ray/auth_token"
fi

mkdir -p "$P7_NODE_DIR"
PIDFILE=$P7_NODE_DIR/head.pid
LOG=$P7_NODE_DIR/head.log
if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: a head node started by this script is running (pid $(cat "$PIDFILE")); scripts/cluster_stop.sh head" >&2
  exit 1
fi

cmd=("$RAY" start --head --block
     --port "$GCS_PORT"
     --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT"
     --ray-client-server-port "$RAY_CLIENT_SERVER_PORT"
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
  echo "note: no AWS_* storage settings in this environment; trials on this node can only use s3:// with the"
  echo "      default AWS credentials chain, or a shared filesystem (see docs/cluster.md)"
fi

if (( FOREGROUND )); then
  echo $$ >"$PIDFILE"
  exec "${cmd[@]}"
fi

# own session: cluster_stop.sh can end the node and every process it started (Ray gives each worker process
# its own process group, but they all stay in this session)
setsid "${cmd[@]}" >"$LOG" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PIDFILE"
for _ in $(seq 1 240); do
  if grep -q "Ray runtime started" "$LOG" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: ray start exited; its log $LOG ends with:" >&2
    tail -n 30 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  sleep 0.5
done
if ! grep -q "Ray runtime started" "$LOG"; then
  echo "error: the head node did not start within 120 s; see $LOG (pid $pid still running)" >&2
  exit 1
fi

ip=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -o "Local node IP: *[0-9a-fA-F.:]*" | grep -o "[0-9a-fA-F.:]*$" | tail -n 1)
ip=${ip:-${NODE_IP:-HEAD_IP}}
cat <<EOF
Ray head node running: pid $pid, log $LOG, cluster address $ip:$GCS_PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT
Token authentication is on. Give each worker machine the token (one of):
    scp ~/.ray/auth_token WORKER:.ray/auth_token      # then: ssh WORKER chmod 600 .ray/auth_token
    RAY_AUTH_TOKEN=\$(cat ~/.ray/auth_token)            # exported in the worker's environment
Add a worker (on each worker machine, storage environment exported first):
    scripts/cluster_worker.sh $ip:$GCS_PORT
Watch (from your own machine): ssh -N -L $DASHBOARD_PORT:127.0.0.1:$DASHBOARD_PORT $(hostname)   then http://127.0.0.1:$DASHBOARD_PORT
Submit: scripts/cluster_submit.sh --storage s3://BUCKET/ray_results --data /abs/path/on/head.parquet ...
Stop:   scripts/cluster_stop.sh head
EOF
