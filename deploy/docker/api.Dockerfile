# The gateway: FastAPI + the Redis client. No torch, no CUDA: a slim image.
# BASE_IMAGE is replaceable (make deploy-check builds on a local Debian base); the default is the
# public image a GPU host pulls.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv

# The versions CI tested (constraints.txt), for the base install only: the `worker` extra (torch,
# diffusers) never enters this image.
COPY constraints.txt pyproject.toml README.md ./
COPY contract ./contract
COPY jobs ./jobs
COPY app ./app
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --create-home --home-dir /home/imagegen imagegen

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
