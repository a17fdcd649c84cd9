# The gateway: FastAPI + the Redis client. No torch, no CUDA: a slim image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv

COPY pyproject.toml README.md ./
COPY contract ./contract
COPY jobs ./jobs
COPY app ./app
# The base install only: the `worker` extra (torch, diffusers) never enters this image.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home imagegen

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
