# atlas-endpoint-monitor: the daemon as a small non-root image.
#   docker build -t atlas-endpoint-monitor .
#   docker run -v ./config.yaml:/etc/atlas-endpoint-monitor/config.yaml:ro \
#     -e MONGODB_ATLAS_PUBLIC_API_KEY -e MONGODB_ATLAS_PRIVATE_API_KEY_FILE=/run/secrets/key \
#     -v ./private-key:/run/secrets/key:ro -p 10479:10479 atlas-endpoint-monitor
# Credentials come only from the environment or a mounted secret file, never from the image.
# tests/test_deploy.py replays these install steps, so keep the two in step.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: build the wheel. Nothing of this stage but the wheel reaches the image.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md LICENSE ./
COPY monitor ./monitor
RUN python -m build --wheel --outdir /dist

# Stage 2: the runtime: the installed package in a venv, run as an unprivileged user.
FROM ${PYTHON_IMAGE}
# The release this image is built from (monitor.__version__; tests/test_deploy.py keeps them
# equal). A release build passes the same: docker build --build-arg VERSION=0.2.0 .
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="atlas-endpoint-monitor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Prometheus exporter and alerter for MongoDB Atlas private endpoints (AWS PrivateLink, Azure Private Link, GCP Private Service Connect)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/atlas-endpoint-monitor/atlas-endpoint-monitor"

ENV VIRTUAL_ENV=/opt/atlas-endpoint-monitor \
    PATH=/opt/atlas-endpoint-monitor/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ATLAS_MONITOR_HEALTHCHECK_URL=http://127.0.0.1:10479/healthz \
    ATLAS_MONITOR_STATE_PATH=/var/lib/atlas-endpoint-monitor/state.db

COPY --from=build /dist /tmp/dist
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 monitor \
    && useradd --system --uid 10001 --gid monitor --no-create-home --shell /usr/sbin/nologin monitor \
    && install -d -o monitor -g monitor -m 0750 /var/lib/atlas-endpoint-monitor

# Restart-safe state (docs/state.md): firing alerts, status_since, add-on-missing attempts.
# Mount a persistent volume here; without one, Docker makes an anonymous volume per container.
VOLUME ["/var/lib/atlas-endpoint-monitor"]

# The config is mounted here (read-only is enough); see config/example.yaml.
WORKDIR /etc/atlas-endpoint-monitor
USER 10001:10001

# server.port of the config; change ATLAS_MONITOR_HEALTHCHECK_URL with it.
EXPOSE 10479

# The image has no curl or wget: Python's standard library asks /healthz. With TLS on
# (server.web_config_file), set the URL to https://; the daemon probes itself, so, as the
# kubelet's probes, it does not verify the certificate.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['ATLAS_MONITOR_HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context())"]

# SIGTERM (docker stop's default) shuts the daemon down cleanly within 10 s.
ENTRYPOINT ["atlas-endpoint-monitor"]
CMD ["run", "--config", "/etc/atlas-endpoint-monitor/config.yaml"]
