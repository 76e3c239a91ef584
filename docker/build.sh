#!/usr/bin/env bash
# Build the sparse-ticket GPU image from the repository root, tagged IMAGE:<commit> and
# IMAGE:latest, with the git commit as a build arg (label org.opencontainers.image.revision).
#
#   docker/build.sh [docker build options...]      e.g. docker/build.sh --no-cache
#
# Environment:
#   IMAGE                image name (default: sparse-ticket)
#   TAG                  tag (default: the 12-digit commit, "-dirty" if tracked files differ)
#   TORCH_INDEX_URL      extra index for torch, e.g. https://download.pytorch.org/whl/cu126
#   NVIDIA_REQUIRE_CUDA  driver check at `docker run --gpus` (default in the Dockerfile:
#                        cuda>=13.0; with the cu126 index: "cuda>=12.6")
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

image="${IMAGE:-sparse-ticket}"
commit=unknown
short=dev
if commit="$(git rev-parse HEAD 2>/dev/null)"; then
    short="${commit:0:12}"
    if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
        echo "build.sh: warning: uncommitted changes; the image is not exactly $commit" >&2
        commit="$commit-dirty"
        short="$short-dirty"
    fi
else
    commit=unknown
    echo "build.sh: warning: not a git checkout; the image's revision is 'unknown'" >&2
fi
tag="${TAG:-$short}"

args=(--build-arg "GIT_COMMIT=$commit" --tag "$image:$tag" --tag "$image:latest")
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi
if [[ -n "${NVIDIA_REQUIRE_CUDA:-}" ]]; then
    args+=(--build-arg "NVIDIA_REQUIRE_CUDA=$NVIDIA_REQUIRE_CUDA")
fi

docker build "${args[@]}" "$@" --file Dockerfile .
echo "built $image:$tag and $image:latest (revision $commit)"
