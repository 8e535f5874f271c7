# One process: the gateway (proxy on 8080, admin on 8081). Slim, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /install /usr/local
COPY policies /etc/gateway/policies
USER gateway
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_ADMIN_HOST=0.0.0.0 \
    GATEWAY_ADMIN_PORT=8081 \
    GATEWAY_POLICIES=/etc/gateway/policies \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8081
ENTRYPOINT ["gateway", "serve"]
