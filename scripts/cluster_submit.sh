#!/usr/bin/env bash
# Submit a tune_p7 search to a running Ray cluster through the dashboard's job API (docs/cluster.md).
#
#   scripts/cluster_submit.sh --storage s3://BUCKET/PREFIX [search.py options...]
#   e.g. scripts/cluster_submit.sh --storage s3://p7/ray_results --data /srv/p7/pydocs.parquet \
#            --space search_spaces/wide.yaml --name wide-1
#
# Runs, from the repository root:
#   ray job submit --address $DASHBOARD --working-dir . --metadata-json '{"job_name": NAME}' \
#       -- python tune_p7/search.py --address auto ARGS... [--name NAME]
# NAME (the dashboard's name of the job) is the experiment's: --name, else <space>-<date>-<time> chosen here.
# The repository is uploaded as the job's working directory (so every node runs this checkout's tune_p7); the
# search's driver runs on the head node. An absolute --data is a path ON THE HEAD NODE; a relative one (or none:
# the shipped data/pydocs.parquet) is a path in this repository, uploaded with the job (scripts/job_env.py;
# other data files, .git and ray_results/ are left out). Follows the job's output until it ends; Ctrl-C
# detaches (the search goes on): see it again with `ray job logs -f JOB_ID`, stop it with `ray job stop JOB_ID`
# (both with RAY_ADDRESS=$DASHBOARD).
#
# Environment: DASHBOARD (http://127.0.0.1:8265: on the head itself, or through `ssh -L 8265:127.0.0.1:8265
# HEAD` from your machine), the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token: the head's),
# P7_NO_WAIT=1 to return at once, PYTHON (the interpreter that runs scripts/job_env.py) [python].
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; fi

storage=""
name=""
space=search_spaces/smoke.yaml
resume=0
prev=""
for a in "$@"; do
  [[ $prev == --storage ]] && storage=$a
  [[ $a == --storage=* ]] && storage=${a#--storage=}
  [[ $prev == --name ]] && name=$a
  [[ $a == --name=* ]] && name=${a#--name=}
  [[ $prev == --space ]] && space=$a
  [[ $a == --space=* ]] && space=${a#--space=}
  [[ $a == --resume ]] && resume=1
  prev=$a
done
# the dashboard's Jobs page names the job as the experiment: without --name, the name search.py would give it
# (<space>-<date>-<time>) is chosen here and passed on
extra=()
if [[ -z $name && $resume == 0 ]]; then
  name="$(basename "${space%.*}")-$(date +%Y%m%d-%H%M%S)"
  extra=(--name "$name")
fi
if [[ -z $storage ]]; then
  echo "error: give --storage s3://BUCKET/PREFIX (or a shared NFS path mounted on every node): trials on other" >&2
  echo "       machines cannot write to the default ./ray_results" >&2
  exit 2
fi

DASHBOARD=${DASHBOARD:-http://127.0.0.1:8265}
RAY=${RAY:-ray}
export RAY_AUTH_MODE=token
if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} && ! -s $HOME/.ray/auth_token ]]; then
  echo "error: no authentication token: export RAY_AUTH_TOKEN=<the head's ~/.ray/auth_token> or copy that file" >&2
  exit 2
fi

cd "$(dirname "$0")/.."
runtime_env=$("${PYTHON:-python}" scripts/job_env.py "$@") || exit 2
submit=("$RAY" job submit --address "$DASHBOARD" --working-dir . --runtime-env-json "$runtime_env")
[[ -n $name ]] && submit+=(--metadata-json "$("${PYTHON:-python}" -c 'import json, sys; print(json.dumps({"job_name": sys.argv[1]}))' "$name")")
[[ ${P7_NO_WAIT:-0} == 1 ]] && submit+=(--no-wait)
exec "${submit[@]}" -- python tune_p7/search.py --address auto "$@" "${extra[@]}"
