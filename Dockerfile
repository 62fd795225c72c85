# perfpulse's container image, in three stages:
#   dashboard  builds the Vue dashboard into exporter/dashboard (Node.js, npm ci)
#   wheel      builds the wheel with the dashboard inside (the same `make dist` builds)
#   runtime    installs that wheel, and Debian's perf, and runs as a non-root user
# Build: docker build -t perfpulse:0.1.0 .
# Hardware counters need CAP_PERFMON (docker run --cap-add PERFMON) or
# kernel.perf_event_paranoid <= 0 on the host; software events count without it.

FROM node:20-bookworm-slim AS dashboard
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
COPY exporter/spec /src/exporter/spec
RUN npm run build

FROM python:3.11.11-slim-bookworm AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md CHANGELOG.md ./
COPY exporter ./exporter
COPY --from=dashboard /src/exporter/dashboard ./exporter/dashboard
RUN python -m build --wheel --outdir /dist

FROM python:3.11.11-slim-bookworm AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="perfpulse" \
      org.opencontainers.image.description="Host-performance exporter: Prometheus metrics, live stream, history" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends linux-perf \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 perfpulse \
 && useradd --system --uid 10001 --gid perfpulse --home-dir /var/lib/perfpulse \
        --create-home --shell /usr/sbin/nologin perfpulse \
 && chmod 0700 /var/lib/perfpulse
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/perfpulse-*-py3-none-any.whl \
 && rm -rf /tmp/dist
USER perfpulse:perfpulse
ENV PERFPULSE_HOST=0.0.0.0 \
    PERFPULSE_PORT=8000 \
    PERFPULSE_DATA_DIR=/var/lib/perfpulse
VOLUME /var/lib/perfpulse
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["perfpulse"]
CMD ["serve"]
