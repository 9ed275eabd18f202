# syntax=docker/dockerfile:1
#
# vsod images. Two final targets, one Dockerfile:
#   docker build -t vsod:gpu .                 # default target `gpu`: CUDA build of torch
#   docker build -t vsod:cpu --target cpu .    # CPU build of torch, for hosts without a GPU
# Both hold the runtime (`vsod serve`), the training package (`vsod-train`, extra [train]) and the
# model store under /app/model_store. See docs/deployment.md.
#
# The CUDA runtime comes from torch's own CUDA wheels (cuBLAS, cuDNN, NCCL... as pip packages), so
# the base is a plain Python image rather than nvidia/cuda: one CUDA copy instead of two. The host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit, which mounts the driver in.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
# cu128 wheels need an NVIDIA driver >= 570 on the host; pass cu126 for older drivers.
ARG TORCH_GPU_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------------------------------------
# wheel: build the vsod wheel from the sources (no dependencies; those come per target below).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY distill ./distill
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
# venv-cpu / venv-gpu: a virtual environment at /opt/venv holding torch (CPU or CUDA build) and
# vsod with its [train] extra. torch goes in first from its own index so that vsod's loose
# `torch>=2.2` is already satisfied and pip never swaps in another build.
FROM ${PYTHON_IMAGE} AS venv-cpu
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
ENV PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/vsod-*.whl)[train]"

FROM ${PYTHON_IMAGE} AS venv-gpu
ARG TORCH_VERSION
ARG TORCH_GPU_INDEX
# true: ONNX Runtime's GPU build (CUDA and TensorRT providers) instead of its CPU build, for
# VSOD_BACKEND=onnxruntime on the GPU. Off by default: auto serves the GPU with torch's float16 path.
ARG ONNXRUNTIME_GPU=false
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_GPU_INDEX}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/vsod-*.whl)[train]" \
    && if [ "${ONNXRUNTIME_GPU}" = "true" ]; then \
         version="$(pip show onnxruntime | sed -n 's/^Version: //p')" \
         && pip uninstall --yes onnxruntime \
         && pip install --no-cache-dir "onnxruntime-gpu==${version}"; \
       fi

# ---------------------------------------------------------------------------------------------
# runtime: what both final images share. No compilers, no pip caches, no sources: the venv is
# copied in by the target stages below.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 vsod \
    && useradd --system --uid 10001 --gid vsod --create-home --home-dir /home/vsod --shell /usr/sbin/nologin vsod \
    && mkdir -p /app/model_store
WORKDIR /app
# The settings the image needs to serve out of the box; everything else keeps service/settings.py's
# defaults. Any VSOD_* variable can be overridden at `docker run -e` / compose `environment:`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VSOD_HOST=0.0.0.0 \
    VSOD_PORT=8000 \
    VSOD_MODEL_STORE=/app/model_store
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/vsod-healthcheck
# The model store is baked in (read-only for the service user); mount a volume over
# /app/model_store to serve other models without rebuilding.
COPY model_store/ /app/model_store/
EXPOSE 8000
# Ready means model loaded and Redis (when configured) reachable: GET /readyz answers 200.
# The first start on a GPU may compile kernels, hence the generous start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 CMD ["vsod-healthcheck"]
# Numeric, so that Kubernetes runAsNonRoot and host tools can check it without an /etc/passwd.
USER 10001:10001
CMD ["vsod", "serve"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS cpu
COPY --from=venv-cpu /opt/venv /opt/venv

# ---------------------------------------------------------------------------------------------
# gpu is last so that a plain `docker build .` builds it.
FROM runtime AS gpu
# Ask the NVIDIA Container Toolkit for the compute driver libraries (as nvidia/cuda images do);
# `--gpus` / compose device reservations choose which GPUs the container sees.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=venv-gpu /opt/venv /opt/venv
