# sealdump container image: `docker run ... sealdump` runs the daemon (`sealdump run`).
#
#   docker build -t sealdump .
#   docker run -v /etc/sealdump:/etc/sealdump:ro -v sealdump-state:/var/lib/sealdump sealdump
#
# BASE_IMAGE must provide Python 3.11+ with venv and pip (the official slim image does).
# Pin it by digest for a reproducible image:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest> -t sealdump .
ARG BASE_IMAGE=python:3.11-slim

# -- build: a virtualenv with sealdump and its dependencies -------------------------------
FROM ${BASE_IMAGE} AS build
# Behind a TLS-intercepting proxy or with a private index: pass its CA bundle (mounted or
# copied into the build) and index as build arguments; pip reads them from the environment.
ARG PIP_CERT
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY daemon ./daemon
# Exact versions with their hashes (requirements.lock, from scripts/lock), then sealdump
# itself without resolving anything again.
# gcc builds sealdump's C extensions (the dump's row scanner: half the database server's
# CPU per backup; with libssl-dev, the keyless tables' content hash); the runtime stage
# gets the built virtualenv only (libcrypto is already there for Python's ssl module).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/sealdump \
 && /opt/sealdump/bin/pip install --require-hashes -r /src/requirements.lock \
 && /opt/sealdump/bin/pip install --no-deps /src

# -- runtime: the virtualenv only, run by an unprivileged fixed UID -----------------------
FROM ${BASE_IMAGE}
ARG UID=10001
COPY --from=build /opt/sealdump /opt/sealdump
COPY config/sealdump.yaml config/schema.yaml /usr/share/sealdump/examples/
COPY config/servers.d /usr/share/sealdump/examples/servers.d
RUN (getent group sealdump || groupadd --system --gid ${UID} sealdump) \
 && (getent passwd sealdump || useradd --system --uid ${UID} --gid sealdump --home-dir /var/lib/sealdump --shell /usr/sbin/nologin sealdump) \
 && mkdir -p /etc/sealdump /var/lib/sealdump \
 && chown sealdump:sealdump /var/lib/sealdump \
 && chmod 0700 /var/lib/sealdump
ENV PATH=/opt/sealdump/bin:$PATH \
    SEALDUMP_CONFIG=/etc/sealdump/sealdump.yaml \
    PYTHONUNBUFFERED=1 \
    SEALDUMP_HEALTH_URL=http://127.0.0.1:9187/healthz
VOLUME ["/var/lib/sealdump"]
USER ${UID}:${UID}
WORKDIR /var/lib/sealdump
# Healthy while the scheduler runs: the /healthz of metrics_listen (set SEALDUMP_HEALTH_URL
# to match it). No curl in slim images, so Python asks.
HEALTHCHECK --interval=60s --timeout=5s --start-period=30s \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SEALDUMP_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["sealdump"]
CMD ["run"]
