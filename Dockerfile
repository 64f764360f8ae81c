# The gateway as a container image.
#
#   docker build -t gateway:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/routes.yaml:/etc/gateway/routes.yaml:ro" gateway:0.1.0
#
# routes.yaml is not part of the image: mount it at /etc/gateway/routes.yaml (a
# bind mount, a Kubernetes ConfigMap, ...). See docs/operations.md, "The container".

ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: wheels of the gateway and of every dependency ------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
COPY upstream_stub ./upstream_stub
# The runtime dependencies and the `tracing` extra (the `test` extra is not built), at
# the versions constraints.txt pins, the ones make test ran against.
RUN pip wheel ".[tracing]" --constraint constraints.txt --wheel-dir /wheels

# -- runtime: the wheels in a virtual environment, run as a non-root user -----------
FROM ${PYTHON_IMAGE} AS runtime

# tini runs as PID 1: it forwards SIGTERM to gunicorn and reaps orphaned processes.
# Not pinned (DL3008): the package's version differs between the Debian releases the
# slim base image moves through; a pinned version would stop the build when it does.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Only the wheels built above, never the package index.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels "gateway[tracing]"

# A fixed, unprivileged user and group; the image never runs as root.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin gateway

WORKDIR /app
COPY gunicorn.conf.py /app/gunicorn.conf.py

# routes.yaml is MOUNTED here at run time, not baked into the image.
ENV GATEWAY_CONFIG=/etc/gateway/routes.yaml \
    GATEWAY_BIND=0.0.0.0:8080

USER 10001:10001
EXPOSE 8080

# /healthz on the port of GATEWAY_BIND, with no proxy from the environment. Slim images
# have no curl; Python's urllib does the same in two seconds at most.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; port = os.environ.get('GATEWAY_BIND', '0.0.0.0:8080').rsplit(':', 1)[-1]; u.build_opener(u.ProxyHandler({})).open(f'http://127.0.0.1:{port}/healthz', timeout=2).close()"]

# gunicorn stops gracefully on SIGTERM: it stops accepting and gives requests in
# progress GATEWAY_GRACEFUL_TIMEOUT (30) seconds. Give `docker stop` longer: -t 35.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gunicorn", "-c", "/app/gunicorn.conf.py", "gateway:create_app()"]
