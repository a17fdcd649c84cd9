# A GPU worker: torch, diffusers, the worker code. Run one container per GPU.
#
# torch comes from PyPI, whose Linux wheel of the pinned version (constraints.txt) carries its own
# CUDA 13.0 libraries: the base needs no CUDA, only Python, and the host needs an NVIDIA driver
# that runs CUDA 13.0 (580 or newer) plus the NVIDIA Container Toolkit, which mounts the driver
# in. For an older driver pick another build of the same version, e.g.
#   --build-arg TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu126"
# make deploy-check substitutes BASE_IMAGE (a local Debian base) and the torch build (CPU).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_PIP_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 \
    HF_HOME=/var/cache/imagegen/huggingface
WORKDIR /srv

COPY constraints.txt ./
# torch first, so that the worker extra never picks a build by itself; its version is the lock's.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt ${TORCH_PIP_ARGS} torch
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY jobs ./jobs
COPY app ./app
COPY workers ./workers
# A home and a writable Hugging Face cache (a volume in docker-compose.yml) for the non-root user.
# spandrel without torchvision: PyPI's is a CUDA build that breaks transformers beside CPU torch.
RUN pip install --no-cache-dir -c constraints.txt ".[worker]" \
    && pip install --no-cache-dir -c constraints.txt --no-deps spandrel \
    && useradd --system --uid 10001 --create-home --home-dir /home/imagegen imagegen \
    && mkdir -p /var/cache/imagegen/huggingface \
    && chown -R imagegen /var/cache/imagegen

USER 10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "workers.healthcheck"]
CMD ["python", "-m", "workers"]
