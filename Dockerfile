# iscsi-audit collector image. Build:  docker build -t iscsi-audit .
# Run:    docker run -d --name iscsi-audit \
#           -e ISCSI_AUDIT_DATABASE_URL=postgresql://iscsi_audit@db:5432/iscsi_audit \
#           -v /etc/iscsi-audit:/etc/iscsi-audit:ro -p 9464:9464 iscsi-audit
# See docs/operations.md ("Container").

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY collector ./collector
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ISCSI_AUDIT_CONFIG=/etc/iscsi-audit/iscsi-audit.toml \
    ISCSI_AUDIT_DATA_DIR=/var/lib/iscsi-audit
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels iscsi-audit \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/iscsi-audit --create-home iscsi-audit
USER 10001
WORKDIR /var/lib/iscsi-audit
EXPOSE 9464
# the collector stops cleanly on SIGTERM (docker stop); give a write time to commit
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=8).status == 200 else 1)"]
ENTRYPOINT ["iscsi-audit", "--log-format", "json"]
CMD ["run", "--metrics-host", "0.0.0.0", "--metrics-port", "9464"]
