# The Freshloop processes (feature pipeline + scorer, learner, drift scheduler, HTTP API) in one
# image; docker-compose.yml runs each as its own service. Build: docker build -t freshloop .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached while only the code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p freshloop connectors feature_pipelines online_learning drift \
    && touch freshloop/__init__.py connectors/__init__.py feature_pipelines/__init__.py \
             online_learning/__init__.py drift/__init__.py \
    && pip install . && pip uninstall -y freshloop

COPY freshloop ./freshloop
COPY connectors ./connectors
COPY feature_pipelines ./feature_pipelines
COPY online_learning ./online_learning
COPY drift ./drift
COPY sql ./sql
# Installed in place: 'freshloop db init' reads the sql/ folder beside the packages.
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 freshloop \
    && mkdir -p /app/.freshloop && chown freshloop /app/.freshloop

USER freshloop
ENTRYPOINT ["freshloop"]
CMD ["api", "serve", "--host", "0.0.0.0"]
