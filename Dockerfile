# One image for the API and the workers (compose.yaml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN pip install . && pip uninstall -y mcpq

COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin mcpq

USER mcpq
EXPOSE 8000
# Keep-alive above what clients and load balancers keep idle connections for (often 60 s): a
# server that closes an idle connection first races the client's next request on it, which then
# fails with no response (uvicorn's default is 5 s).
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-keep-alive", "75", "--no-access-log"]
