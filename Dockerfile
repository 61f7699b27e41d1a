# Image for the web and worker services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Never run the app as root in the container.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /var/lib/marketplace \
    && chown -R app:app /app /var/lib/marketplace
USER app

EXPOSE 8000
# Threaded workers: a sync worker is killed after --timeout, which would cut a long streamed archive download.
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--worker-class", "gthread", "--threads", "8", "--timeout", "60", "--access-logfile", "-"]
