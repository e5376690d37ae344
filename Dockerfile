# syntax=docker/dockerfile:1
# Build stage: wheels of every dependency, compiled here if they must be.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && rm /wheels/deardiary_registry-*.whl

# Runtime stage: no compilers, a non-root user, the source and its indexes.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 deardiary
WORKDIR /srv/deardiary
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
COPY app ./app
COPY indexes ./indexes
ENV DEARDIARY_HOST=0.0.0.0 \
    DEARDIARY_PORT=9000 \
    PYTHONUNBUFFERED=1
USER deardiary
EXPOSE 9000
# TODO(#5): health check, worker processes and the compose file.
ENTRYPOINT ["python", "-m", "app"]
