# futbot signal service. Installs from the same pinned files as `make` (settings.ini + requirements.lock).
# Build: docker build -t futbot .   Run: docker run --env-file .env -p 8000:8000 futbot

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
COPY settings.ini setup.py pyproject.toml requirements.lock README.md ./
COPY futbot/ futbot/
RUN pip install --no-cache-dir --upgrade pip wheel 'setuptools<81' \
 && pip install --no-cache-dir -c requirements.lock .

FROM python:3.11-slim
# libgomp1: OpenMP runtime that LightGBM needs
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 futbot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY configs/ configs/
COPY nbs/pipelines/ nbs/pipelines/
RUN mkdir -p data artifacts logs cache/numba && chown -R futbot:futbot /app
USER futbot
# numba kernels compile once into a writable cache owned by the service user
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 FUTBOT_CONFIG_DIR=/app/configs FUTBOT_HOME=/app \
    FUTBOT_DATA_DIR=/app/data FUTBOT_ARTIFACTS_DIR=/app/artifacts FUTBOT_LOG_DIR=/app/logs \
    NUMBA_CACHE_DIR=/app/cache/numba
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"
CMD ["futbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
