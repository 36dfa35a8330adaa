#!/usr/bin/env bash
# Start the Ray head node of a multi-machine tune_p7 search on this machine (docs/cluster.md).
#
#   scripts/cluster_head.sh [--foreground] [more `ray start` options]
#
# Runs `ray start --head --block` in its own session in the background, records its process id in
# $P7_NODE_DIR/head.pid (end it with scripts/cluster_stop.sh) and logs to $P7_NODE_DIR/head.log. With
# --foreground it replaces this shell instead (for systemd, tmux, ...): stop it with Ctrl-C or SIGTERM.
# deploy/systemd/p7-ray-head.service runs it so, restarting it when it exits.
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
ROLE=head
source "$(dirname "$0")/node_common.sh"

if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
  if [[ ! -s $HOME/.ray/auth_token ]]; then
    "$RAY" get-auth-token --generate >/dev/null   # writes ~/.ray/auth_token
  fi
  chmod 600 "$HOME/.ray/auth_token"
fi

mapfile -d '' opts < <(node_options)
start_node "$RAY" start --head --block --port "$GCS_PORT" \
  --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" --ray-client-server-port "$RAY_CLIENT_SERVER_PORT" \
  "${opts[@]}" "$@"

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
