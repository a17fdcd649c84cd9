# A GPU worker: CUDA runtime, torch built for CUDA, diffusers. Run one container per GPU.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 PATH=/opt/venv/bin:$PATH
# Ubuntu's package versions move with its security updates; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
WORKDIR /srv

# torch first, from the CUDA index, so that the worker extra never picks a build by itself.
RUN pip install --no-cache-dir torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY jobs ./jobs
COPY app ./app
COPY workers ./workers
# Versions of the worker extra are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[worker]" \
    && useradd --system --uid 10001 --no-create-home imagegen

USER 10001
STOPSIGNAL SIGTERM
CMD ["python", "-m", "workers"]
