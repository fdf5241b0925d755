#!/usr/bin/env bash
# Submit hrm-pipeline jobs to a running Ray cluster through its Jobs API (see cluster/README.md).
#   RAY_ADDRESS=http://127.0.0.1:8265 bash cluster/submit.sh data|train|tune|all
# RAY_ADDRESS: the dashboard address (a port-forward or `ray dashboard` tunnel). The image already holds the code,
# so jobs run in its repository folder; to try local edits instead, add `--working-dir .` (uploads this checkout).
# Everything a job writes that another node or job needs goes to shared storage (SHARED, an NFS/EFS/PVC mount on
# every node); MLflow gets it over HTTP (MLFLOW_TRACKING_URI, set on the cluster's nodes).
set -euo pipefail
if ! command -v ray > /dev/null; then  # the ray CLI of this project's venv (or of any Ray 2.60 install)
  echo "submit.sh: the ray command is not on PATH: run 'source .venv/bin/activate' first (make setup creates .venv)" >&2
  exit 2
fi
: "${RAY_ADDRESS:=http://127.0.0.1:8265}"
SHARED=${SHARED:-/mnt/shared}
APP=${APP:-/home/ray/hrm-pipeline}
export RAY_ADDRESS

# The commit of this checkout, for the MLflow run's git tag: a job's working dir has no .git (pipeline/tracking/version.py)
COMMIT=$(git -C "$(dirname "$0")" rev-parse HEAD 2> /dev/null || true)

submit() {  # a job that outlives this shell: follow it with `ray job logs -f <id>`, stop it with `ray job stop <id>`
  ray job submit --no-wait --runtime-env-json "{\"env_vars\": {\"RAY_TRAIN_ENABLE_PRINT_PATCH\": \"0\", \"RAY_TRAIN_ENABLE_STATE_TRACKING\": \"1\", \"HRM_GIT_COMMIT\": \"$COMMIT\"}}" -- "$@"
}

data() {
  submit "cd $APP && hrm data build sudoku --config pipeline/configs/data-sudoku-extreme-1k.yaml --out $SHARED/data/sudoku-extreme-1k"
}

train() {
  submit "cd $APP && hrm train --config pipeline/configs/train-sudoku-extreme-1k.yaml --set data=$SHARED/data/sudoku-extreme-1k --set storage_path=$SHARED/runs"
}

tune() {
  submit "cd $APP && hrm tune --config pipeline/configs/sweep-sudoku-depth.yaml --set storage_path=$SHARED/runs/sweeps --set overrides.data=$SHARED/data/sudoku-extreme-1k"
}

case "${1:-}" in
  data) data ;;
  train) train ;;
  tune) tune ;;
  all) data; echo "wait for the data job to succeed (ray job list), then: $0 train; $0 tune" ;;
  *) echo "usage: RAY_ADDRESS=http://HOST:8265 $0 data|train|tune|all" >&2; exit 2 ;;
esac
ray job list | tail -n 5
