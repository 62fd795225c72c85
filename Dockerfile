# perfpulse: the exporter, its Python dependencies, and Debian's perf.
FROM python:3.11.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends linux-perf \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir .

ENV PERFPULSE_HOST=0.0.0.0 \
    PERFPULSE_PORT=8000 \
    PERFPULSE_DATA_DIR=/var/lib/perfpulse
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["perfpulse"]
CMD ["serve"]
