# The demo project served by runprefork. Build: docker build -t prefork-demo .
# Run: docker run --rm -p 8000:8000 -e DJANGO_SECRET_KEY=... prefork-demo
# docs/deployment.md ("The Dockerfile") explains every line.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY setup.py pyproject.toml README.md LICENSE MANIFEST.in ./
COPY django_prefork ./django_prefork
RUN pip install ".[demo]"

COPY manage.py ./
COPY demo_project ./demo_project
RUN python manage.py collectstatic --noinput

RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent app \
    && mkdir /data && chown app:app /data
ENV DJANGO_SQLITE_PATH=/data/db.sqlite3 \
    PORT=8000 \
    WEB_CONCURRENCY=2
VOLUME ["/data"]
USER app

EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/-/live' % os.environ.get('PORT', '8000'); sys.exit(urllib.request.urlopen(url, timeout=2).status != 200)"]
CMD ["python", "manage.py", "runprefork", "--health-on-main-bind"]
