# syntax=docker/dockerfile:1
# DearDiary registry, for a network: see compose.yaml and README "Deploying".
#
# The image holds no database: it needs DEARDIARY_MONGO_URI, a MongoDB
# replica set (the embedded store is for a laptop; without the URI the
# server exits at once with one line naming that variable). It listens on
# every interface, so auth is on: DEARDIARY_JWT_SECRET (or _FILE) and, on
# a fresh database, DEARDIARY_ADMIN_USERNAME and DEARDIARY_ADMIN_PASSWORD
# (or _FILE) are required. An open registry takes an explicit
# DEARDIARY_ENABLE_AUTH=false with DEARDIARY_ALLOW_INSECURE_NETWORK=true.

# Build stage: wheels of every dependency (all ship binary wheels for
# Linux), so the runtime stage installs without a compiler.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && rm /wheels/deardiary_registry-*.whl

# Runtime stage: the wheels, the source and its indexes, a non-root user.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DEARDIARY_HOST=0.0.0.0 \
    DEARDIARY_PORT=9000 \
    DEARDIARY_ENABLE_AUTH=true
RUN groupadd --gid 10001 deardiary \
    && useradd --create-home --uid 10001 --gid 10001 deardiary
WORKDIR /srv/deardiary
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
COPY app ./app
COPY indexes ./indexes
USER 10001:10001
EXPOSE 9000
# Liveness only: a MongoDB outage makes /health/ready answer 503, not the
# container unhealthy. Slim images have no curl; Python has urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('DEARDIARY_PORT', '9000'), timeout=4)"]
# python is PID 1 and gets the stop signal itself: it forwards it to the
# workers, lets requests in flight finish, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "app"]
