#!/usr/bin/env bash
# Stop the Ray node(s) that scripts/cluster_head.sh / cluster_worker.sh started on this machine.
#
#   scripts/cluster_stop.sh [head|worker]      (default: both, worker first)
#
# Ends each node by its recorded process id ($P7_NODE_DIR/{head,worker}.pid): SIGTERM to its `ray start --block`
# process, which shuts its node down (Ray first drains the node, up to RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S,
# 30 s by default); after STOP_TIMEOUT seconds (45) SIGKILL to every process left in that node's session (its
# Ray workers included: Ray gives each its own process group). Never `ray stop`, which would end every Ray
# process of the machine, other users' included.
#
# Stopping the head ends the cluster: a running search fails. Stop a search with `ray job stop JOB_ID` first;
# resume it later with `--resume --name NAME` (same --storage).
set -euo pipefail

P7_NODE_DIR=${P7_NODE_DIR:-$HOME/.ray/tune_p7}
STOP_TIMEOUT=${STOP_TIMEOUT:-45}
case ${1:-all} in
  head) roles=(head) ;;
  worker) roles=(worker) ;;
  all) roles=(worker head) ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac

session_pids() {  # processes of session $1
  ps -e -o pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'
}

stopped=0
for role in "${roles[@]}"; do
  pidfile=$P7_NODE_DIR/$role.pid
  [[ -f $pidfile ]] || continue
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$role: not running (stale $pidfile)"
  elif ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "ray start"; then
    echo "$role: pid $pid is not a 'ray start' process any more; not touching it (stale $pidfile)"
  else
    sid=$(ps -o sid= -p "$pid" | tr -d ' ')
    echo "$role: stopping ray start (pid $pid) ..."
    kill -TERM "$pid"
    for _ in $(seq 1 $((STOP_TIMEOUT * 2))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if [[ $sid == "$pid" ]]; then   # started by our scripts: the node has a session of its own
      left=$(session_pids "$sid")
      if [[ -n $left ]]; then
        echo "$role: SIGKILL to what is left of the node: $(echo $left)"
        kill -KILL $left 2>/dev/null || true
      fi
    elif kill -0 "$pid" 2>/dev/null; then
      echo "$role: still running after ${STOP_TIMEOUT}s; SIGKILL to pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "$role: stopped"
    stopped=$((stopped + 1))
  fi
  rm -f "$pidfile"
done
(( stopped > 0 )) || echo "no node started by these scripts is running here (pid files in $P7_NODE_DIR)"
