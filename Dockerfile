# syntax=docker/dockerfile:1
# One image for every role; the command picks it:
#   outbox serve --host 0.0.0.0 --port 8000   the API (the default command)
#   outbox worker --concurrency 4             a Celery worker
#   outbox beat                               the sweeper's scheduler (exactly one)
#   outbox db upgrade                         migrations, before the API starts
# Settings come from OUTBOX_* environment variables; see deploy/env.example and docs/operations.md.

ARG PYTHON_VERSION=3.11

# --- build: a virtual environment with the package and its dependencies -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/outbox
WORKDIR /src
# Dependencies first, at the versions of requirements.lock (the ones CI tested; `make lock`),
# from pyproject.toml and the lock alone, so that a source change reuses this layer. The lock
# also pins the dev tools; as constraints they are only versions, nothing installs them here.
COPY pyproject.toml README.md requirements.lock ./
RUN mkdir -p outbox workers \
    && touch outbox/__init__.py workers/__init__.py \
    && /opt/outbox/bin/pip install -c requirements.lock . \
    && /opt/outbox/bin/pip uninstall --yes agent-outbox
COPY outbox ./outbox
COPY workers ./workers
RUN /opt/outbox/bin/pip install --no-deps . \
    && /opt/outbox/bin/python -m compileall -q /opt/outbox/lib

# --- runtime: slim, non-root, no compilers, no source tree ---------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# tini reaps the children of tools run by workers and forwards signals; bubblewrap is the
# sandbox of the command tools (see docs/operations.md for what it needs from the runtime).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini bubblewrap libseccomp2 socat ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 outbox \
    && useradd --system --uid 10001 --gid outbox --home-dir /var/lib/outbox --shell /usr/sbin/nologin outbox \
    && install -d -o outbox -g outbox -m 0750 /var/lib/outbox
COPY --from=build /opt/outbox /opt/outbox
# The policies of this commit; deployments usually mount their own over /app/policies.
COPY policies /app/policies
ENV PATH=/opt/outbox/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OUTBOX_ENVIRONMENT=production \
    OUTBOX_POLICY_DIR=/app/policies \
    OUTBOX_DATA_DIR=/var/lib/outbox \
    OUTBOX_LOG_JSON=true
WORKDIR /app
USER 10001:10001
# 8000: the API; 9100: a worker's metrics (OUTBOX_WORKER_METRICS_PORT).
EXPOSE 8000 9100
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["outbox", "serve", "--host", "0.0.0.0", "--port", "8000"]
