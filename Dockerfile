# sparse-ticket: the GPU image (build: docker/build.sh; use: README.md, "Containers").
#
# Base: Debian 12 (bookworm) slim with Debian's own Python 3.11 (python3 3.11.2), pinned to a
# point release. The same file builds in CI, where no registry is reachable: CI makes a bookworm
# base with debootstrap (the official debian image is built the same way, from the same
# packages) and passes it as BASE_IMAGE (.ci/build-image). No nvidia/cuda base is needed:
# torch==2.13.0 on PyPI (Linux x86_64) is the CUDA 13.0 build and brings its CUDA runtime,
# cuDNN 9.20 and NCCL as pip packages, so a CUDA base would only add a second, unused copy of
# them. The one thing from outside is the host's NVIDIA driver (>= 580 for CUDA 13.0), mounted by
# `docker run --gpus` or `singularity --nv`.
ARG BASE_IMAGE=debian:12.12-slim
FROM ${BASE_IMAGE}

# Which torch build: "cuda" (the default, from PyPI or TORCH_INDEX_URL) or "cpu", the CPU wheel
# of the same version from docker/wheels/ (CI: the CUDA wheels are ~3 GB to download per run).
# The check after the install fails the build if the other kind was picked up.
ARG TORCH_VARIANT=cuda
# An extra index for torch, for hosts whose driver is too old for CUDA 13.0: e.g.
# https://download.pytorch.org/whl/cu126 installs 2.13.0+cu126, the same pinned version built for
# CUDA 12.6 (then also pass NVIDIA_REQUIRE_CUDA="cuda>=12.6"). Empty: everything from PyPI.
ARG TORCH_INDEX_URL=""
# Checked by the NVIDIA container toolkit at `docker run --gpus`: a too-old driver fails at once
# with a clear message instead of training on the CPU (override: -e NVIDIA_DISABLE_REQUIRE=true).
ARG NVIDIA_REQUIRE_CUDA="cuda>=13.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=${NVIDIA_REQUIRE_CUDA}

# python3 + venv: Debian's Python 3.11 (PEP 668 keeps pip out of the system site, hence a venv);
# git: MLflow and the provenance tags read the commit of a mounted checkout (the image itself has
# no .git); tini: PID 1 that forwards SIGTERM/SIGINT to the whole run (-g), so `docker stop` lets
# a run checkpoint and end cleanly; ca-certificates: HTTPS to PyPI and tracking servers. Versions
# are not pinned: Debian removes superseded versions from its archive (a pin breaks the build at
# the next security update), and none of them touches a result; the results are pinned by the
# base's release and requirements.txt.
# docker/certs/*.crt: CAs of a TLS-intercepting proxy, trusted by pip and the runs (see there).
COPY docker/certs/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/local/share/ca-certificates/README.md \
    && update-ca-certificates \
    && python3 -m venv /opt/venv

WORKDIR /opt/sparse-ticket

# Exactly requirements.txt (its own layer: the code below changes far more often).
COPY requirements.txt ./
COPY docker/wheels/ /tmp/wheels/
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --find-links /tmp/wheels -r requirements.txt \
    && rm -rf /tmp/wheels \
    && python -c "import sys, torch; cuda = torch.version.cuda; ok = bool(cuda) == (sys.argv[1] == 'cuda'); print('torch', torch.__version__, 'CUDA', cuda); sys.exit(0 if ok else 'torch is not the ' + sys.argv[1] + ' build')" "$TORCH_VARIANT"

# The project: what `mlflow run .` and the code version hash need (see .dockerignore).
COPY pyproject.toml README.md MLproject python_env.yaml ./
COPY sparse_ticket/ sparse_ticket/
COPY sparse_ticket_mlflow/ sparse_ticket_mlflow/
COPY docker/entrypoint.sh docker/entrypoint.sh

# The project itself, nothing else (--no-deps), editable: one copy of the code. Results
# are written to the volume: the relative paths the entry points use (studies/, evaluation/,
# MLflow's ./mlruns artifact root, st_checkpoints/) are links into /data. /data is writable by
# any uid, so a named volume works with `--user "$(id -u):$(id -g)"` as well as the default user.
RUN pip install --no-cache-dir --no-deps -e . \
    && chmod 0755 docker/entrypoint.sh \
    && useradd --create-home --uid 1000 --user-group sparse \
    && mkdir -p /data \
    && chown sparse:sparse /data \
    && chmod 1777 /data \
    && ln -s /data/studies studies \
    && ln -s /data/evaluation evaluation \
    && ln -s /data/mlruns mlruns \
    && ln -s /data/mlartifacts mlartifacts \
    && ln -s /data/checkpoints st_checkpoints

# Tracking store, checkpoints and outputs on the volume; no telemetry (clusters are offline).
ENV MLFLOW_TRACKING_URI=sqlite:////data/mlflow.db \
    SPARSE_TICKET_CHECKPOINT_DIR=/data/checkpoints \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    TINI_SUBREAPER=1
VOLUME ["/data"]

USER 1000:1000

# Last, so that a new commit rebuilds no layer above. The code records git_commit "unknown"
# inside the image (no .git): the commit is this label and $SPARSE_TICKET_GIT_COMMIT.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="sparse-ticket" \
      org.opencontainers.image.description="Lottery tickets across Atari games: the MLflow project with a CUDA build of torch" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
ENV SPARSE_TICKET_GIT_COMMIT=${GIT_COMMIT}

ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/sparse-ticket/docker/entrypoint.sh"]
# With no command: the demo study, results in /data/studies/demo/evaluation.
CMD ["mlflow", "run", ".", "-e", "main", "--env-manager", "local", "-P", "preset=demo"]
