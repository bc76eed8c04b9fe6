# ChatBase image: Daphne serving the ASGI app as a non-root user.
# The machines this project is developed on reach no image registry, so this file is
# not built in CI; keep it in step with requirements.txt.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=chatbase.settings.production \
    VAR_DIR=/app/var \
    HF_HUB_OFFLINE=1 \
    PORT=8000

WORKDIR /app

COPY requirements.txt constraints.txt ./
# torch's CPU build comes from PyTorch's own index; everything else from PyPI.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt -c constraints.txt

COPY . .
RUN useradd --create-home --uid 10001 chatbase \
    && mkdir -p /app/var \
    && SECRET_KEY=build-only ALLOWED_HOSTS=localhost DATABASE_URL=postgres://build@localhost/build \
       python manage.py collectstatic --noinput \
    && chown -R chatbase:chatbase /app/var

USER chatbase
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=4)"

CMD ["sh", "-c", "exec daphne -b 0.0.0.0 -p ${PORT} --websocket-max-message-size 1048576 --websocket-max-frame-size 1048576 chatbase.asgi:application"]
