#!/usr/bin/env bash
# Add this machine to a tune_p7 Ray cluster as a worker node (docs/cluster.md).
#
#   scripts/cluster_worker.sh HEAD_IP[:PORT] [--foreground] [more `ray start` options]
#
# Runs `ray start --address HEAD_IP:PORT --block` in its own session in the background, records its process
# id in $P7_NODE_DIR/worker.pid (end it with scripts/cluster_stop.sh) and logs to $P7_NODE_DIR/worker.log.
# With --foreground it replaces this shell instead: run it so under scripts/supervise.sh or
# deploy/systemd/p7-ray-worker.service, and the worker rejoins by itself after a link cut long enough to be
# marked dead or a head restart (Ray does not restart a node; docs/cluster.md, Supervision).
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

ROLE=worker
source "$(dirname "$0")/node_common.sh"

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

mapfile -d '' opts < <(node_options)
start_node "$RAY" start --address "$HEAD" --block "${opts[@]}" "$@"
echo "Ray worker node running: pid $pid, log $LOG, joined $HEAD. Stop: scripts/cluster_stop.sh worker"
