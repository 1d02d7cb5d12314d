# syntax=docker/dockerfile:1
# Image for the serving runtime (KServe ServingRuntime container `kserve-container`).
#   docker build -t serving:0.1.0 .
# The batch image (manifests/batch, examples/airflow) adds the 'batch' extra's lock (pyarrow):
#   docker build --build-arg LOCK=batch -t serving:0.1.0-batch .
# Stage 1 installs the locked runtime dependencies into a virtualenv (cached until the lock
# changes), then the package; stage 2 copies only the virtualenv onto a clean slim base: no pip cache, no build tools.
# tests/deploy/test_image.py runs these RUN steps and the ENTRYPOINT in a fresh virtualenv.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# uv installs wheels in parallel and compiles bytecode (the read-only root filesystem cannot cache
# .pyc files at run time); its download cache is a BuildKit cache mount, so it never enters a layer.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_CACHE_DIR=/root/.cache/uv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Which lock the image installs: runtime (serving) or batch (runtime + pyarrow).
ARG LOCK=runtime
# Everything installs from the lock files (scripts/lock.sh writes them), hashes checked: the
# installer, then the dependencies (these layers are rebuilt only when the locks change).
COPY requirements/ ./requirements/
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-deps --require-hashes -r requirements/uv.txt \
    && python -m venv --without-pip /opt/venv
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv pip install --require-hashes -r "requirements/${LOCK}.txt"
# Then the code: a change here rebuilds only this layer. No dependency is resolved here: they are
# all installed above, and `uv pip check` fails the build if the lock missed one.
COPY pyproject.toml README.md ./
COPY serving ./serving
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv pip install --no-deps --build-constraints requirements/build.txt . \
    && /opt/uv/bin/uv pip check

FROM python:${PYTHON_VERSION}-slim-bookworm
# Fixed non-root UID; group 0 so OpenShift's arbitrary UIDs can read the files too.
ARG UID=10001
RUN useradd --uid "${UID}" --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin serving
# LightGBM's wheels link the system's OpenMP runtime (libgomp.so.1), which the slim base lacks.
# Unpinned: the base image's Debian release fixes its version, and a pin breaks at the next point release.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem: the only writable place is the /tmp volume (emptyDir in the pod).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER ${UID}:0
WORKDIR /tmp
EXPOSE 8080 8081
# KServe's storage initializer puts the model files in /mnt/models; the ServingRuntime's args add
# --model-name={{.Name}}, --http-port and --grpc-port.
ENTRYPOINT ["serving", "serve", "--model-repo", "/mnt/models"]
CMD ["--http-port", "8080", "--grpc-port", "8081"]
