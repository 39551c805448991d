# Image of the `trader` command for docker-compose.yml. Build: docker build -t qlib-alpaca-trader:local .
FROM python:3.11-slim

# libgomp1: the OpenMP runtime LightGBM's wheel links against (not in the slim image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv

# uv is installed with pip, as `make setup` does on a machine without it.
RUN pip install --no-cache-dir uv

WORKDIR /app

# Dependencies first (cached while only the source changes), exactly as locked in uv.lock.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY src ./src
RUN uv sync --frozen --no-dev

ENV PATH="/app/.venv/bin:${PATH}"

# Run as an unprivileged user; the embedded state directories are the only writable places.
RUN useradd --create-home --uid 10001 trader \
    && mkdir -p /app/var /app/data /app/artifacts \
    && chown -R trader:trader /app/var /app/data /app/artifacts
USER trader

ENTRYPOINT ["trader"]
CMD ["--help"]
