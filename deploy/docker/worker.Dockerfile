# A GPU worker: CUDA runtime, torch built for CUDA, diffusers. One container per GPU.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv

# torch first, from the CUDA index, so that the worker extra never picks a build by itself.
RUN pip install --no-cache-dir torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124
COPY pyproject.toml README.md ./
COPY app ./app
COPY contract ./contract
COPY workers ./workers
COPY devstack ./devstack
RUN pip install --no-cache-dir ".[worker]" \
    && useradd --system --uid 10001 --home /srv imagegen

USER imagegen
CMD ["python", "-m", "workers"]
