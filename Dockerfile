# The Chronik image: the `chronik` command with the project installed; docker-compose.yml runs
# workflow and activity workers from it. Your own workflows go in a derived image, e.g.
#   FROM chronik:local
#   COPY myapp /app/myapp
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The packages (and the Avro contract they load), then the examples the compose file runs.
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY topics ./topics
COPY avro ./avro
COPY workers ./workers
RUN pip install . \
    && useradd --create-home --uid 10001 chronik \
    && mkdir -p /var/lib/chronik \
    && chown chronik /var/lib/chronik
COPY --chown=chronik examples ./examples

USER chronik
# Workers keep their RocksDB partition stores here; a cache of Kafka, safe to lose.
ENV CHRONIK_STATE_DIR=/var/lib/chronik
ENTRYPOINT []
CMD ["chronik", "--help"]
