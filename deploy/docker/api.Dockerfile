# The gateway: FastAPI + Redis client. No torch, no CUDA.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv

COPY pyproject.toml README.md ./
COPY app ./app
COPY contract ./contract
COPY workers/__init__.py workers/demo_assets ./workers/
COPY devstack ./devstack
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /srv imagegen

USER imagegen
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
