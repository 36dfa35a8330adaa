#!/usr/bin/env bash
# Keep a tune_p7 Ray node running where systemd is not available: what deploy/systemd/p7-ray-*.service do
# (EnvironmentFile, Restart=always, RestartSec) in a shell loop.
#
#   scripts/supervise.sh ENV_FILE CMD [ARGS...]
#   e.g. scripts/supervise.sh ~/.p7-node.env scripts/cluster_worker.sh HEAD_IP:6379 --foreground
#
# Reads ENV_FILE (KEY=VALUE lines, as systemd's EnvironmentFile: the token, the storage settings, NUM_CPUS, ...)
# before every start, runs CMD in the foreground and starts it again RESTART_SEC seconds (from the file, else 5)
# after it exits, whatever its exit code: a worker whose raylet was marked dead (a link cut longer than the
# head's health checks allow) or that lost its head (a head restart) exits, and this loop makes it rejoin once
# the head is reachable again. SIGTERM / SIGINT stop CMD (SIGTERM to it: `ray start --block` shuts its node down)
# and the loop. Run it under nohup/tmux/your init system; it writes what it restarts to stderr.
set -uo pipefail

if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; fi
env_file=$1; shift
[[ -r $env_file ]] || { echo "error: cannot read $env_file" >&2; exit 2; }

child=""
stopping() {
  if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit 0
}
trap stopping TERM INT

while true; do
  set -a; . "$env_file"; set +a
  "$@" &
  child=$!
  wait "$child"; code=$?
  child=""
  echo "supervise: $(date '+%F %T') $1 exited with code $code; starting it again in ${RESTART_SEC:-5} s" >&2
  sleep "${RESTART_SEC:-5}" &
  wait $!
done
