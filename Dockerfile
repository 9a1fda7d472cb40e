# feedbridge as a container: the Procfile's command, from requirements.txt and the package.
# docs/deploying.md#a-container says how to run it and what of it was tested.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# The pinned dependencies first (a layer that changes only with the lock), then the package.
RUN python3 -m venv /opt/venv
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin feedbridge \
    && mkdir -p /data && chown feedbridge /data

# The SQLite store on a volume: it is the history, keep it across containers.
ENV FEEDBRIDGE_DB=/data/feedbridge.db \
    PORT=8000
VOLUME /data
USER feedbridge
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"

# The Procfile's web line, under sh as a platform runs it; exec makes the server PID 1's
# child no more: it is PID 1, and `docker stop`'s SIGTERM stops it.
CMD exec python -m feedbridge.server
