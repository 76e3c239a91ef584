#!/usr/bin/env bash
# Entry point of the sparse-ticket image: prepare the data volume, then exec the command, e.g.
#   docker run --gpus all -v st-data:/data IMAGE mlflow run . -e transfer --env-manager local -P ...
# It runs under tini (-g), so SIGTERM from `docker stop` reaches the run, which checkpoints and
# ends its MLflow run. `singularity exec` skips it; `singularity run` uses it.
set -euo pipefail

data=/data

# `docker run --user UID:GID` with a UID the image does not know leaves HOME=/, which is not
# writable: matplotlib, torch and triton keep their caches under HOME.
if [[ ! -w "${HOME:-/}" ]]; then
    HOME="/tmp/home-$(id -u)"
    export HOME
    mkdir -p "$HOME"
fi

# The project directory links studies/, evaluation/, mlruns/, mlartifacts/ and st_checkpoints/
# to these, so they must exist before a run writes through the links.
if [[ -d "$data" && -w "$data" ]]; then
    mkdir -p "$data/studies" "$data/evaluation" "$data/mlruns" "$data/mlartifacts" \
        "$data/checkpoints"
else
    cat >&2 <<EOF
sparse-ticket: warning: $data is not writable by uid $(id -u): checkpoints, outputs and
a tracking store there (MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-}) cannot be written.
For a bind mount, create the host directory first and run as its owner:
  mkdir -p st-data && docker run --user "\$(id -u):\$(id -g)" -v "\$PWD/st-data:/data" ...
or use a named volume (-v st-data:/data).
EOF
fi

if [[ $# -eq 0 ]]; then
    echo "usage: IMAGE COMMAND..., e.g. mlflow run . -e main --env-manager local" >&2
    exit 2
fi
exec "$@"
