# trackflow worker image. Build: docker build -t trackflow .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRACKFLOW_DATA_DIR=/data \
    TRACKFLOW_SCHEMAS_DIR=/app/schemas \
    TRACKFLOW_WEB_HOST=0.0.0.0

WORKDIR /app
# jemalloc, not glibc's malloc: the RSS step a survivor keeps after a takeover is a fifth
# of glibc's (docs/decisions.md, "jemalloc: the image's malloc"). The link gives LD_PRELOAD
# one path on every architecture. Before the COPYs, so a code change reuses this layer.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(ls /usr/lib/*-linux-gnu/libjemalloc.so.2)" /usr/local/lib/libjemalloc.so.2
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY tables ./tables
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app trackflow \
    && mkdir -p /data && chown trackflow /data

ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2

USER trackflow
VOLUME ["/data"]
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TRACKFLOW_WEB_PORT', '6066'), timeout=2)"
ENTRYPOINT ["trackflow"]
CMD ["worker"]
