# A runnable image of the pgmig service. pg_dump/pg_restore/psql come from PGDG so that the client
# binaries are at least as new as the newest server involved (pg_dump refuses newer servers).
FROM python:3.11-slim-bookworm

ARG PG_MAJOR=17
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY bot ./bot
COPY handlers ./handlers
COPY migration_core ./migration_core
RUN pip install --no-cache-dir --no-deps .

RUN useradd --system --create-home pgmig && mkdir -p /data && chown pgmig /data
USER pgmig
ENV PGMIG_CONFIG=/config/pgmig.toml \
    PGMIG_STATE=/data/state.sqlite \
    PORT=3000
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
CMD ["pgmig", "serve"]
