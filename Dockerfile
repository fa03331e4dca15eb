# syntax=docker/dockerfile:1
# One image for every flashgate process: flashgate-gateway (default),
# flashgate-consumer and flashgate-backend. Slim, non-root, and built only from
# pinned versions: the base image by exact tag (pin its digest too in your
# registry: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...),
# the build tools below, every Python package by requirements.lock.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The build tools, exact: pip's build isolation would otherwise fetch whatever
# setuptools is newest that day (pyproject.toml asks for >= 77 only).
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
RUN python -m venv /opt/flashgate \
    && /opt/flashgate/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c requirements.lock "pip==${PIP_VERSION}" "setuptools==${SETUPTOOLS_VERSION}"
COPY flashgate ./flashgate
COPY gateway ./gateway
COPY order_consumer ./order_consumer
COPY reference_backend ./reference_backend
# requirements.lock pins every dependency (it also lists the dev tools, which
# a constraint file only limits and never installs); the package is built with
# the setuptools pinned above, not an isolated fresh one.
RUN /opt/flashgate/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-build-isolation -c requirements.lock . \
    && /opt/flashgate/bin/pip check

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 flashgate \
    && useradd --system --uid 10001 --gid flashgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin flashgate
COPY --from=build /opt/flashgate /opt/flashgate
ENV PATH=/opt/flashgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
# 8080 public API, 8081 admin API (both from flashgate-gateway), 8082 the consumer's
# health and metrics ([drain] health_port), 8090 reference backend.
EXPOSE 8080 8081 8082 8090
# Liveness of the gateway (the other processes override or disable it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["flashgate-gateway"]
