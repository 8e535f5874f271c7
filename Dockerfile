# One process: the gateway (proxy on 8080, admin on 8081). Slim, non-root.
# Every Python package, the build backend included, is pinned by deploy/docker/constraints.txt;
# docs/deploy.md says why and how to move the pins.
FROM python:3.11-slim AS build
WORKDIR /src
COPY deploy/docker/constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt setuptools
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# --ignore-installed: every dependency lands in /install, even one the base image has.
RUN pip install --no-cache-dir --no-build-isolation --ignore-installed --prefix=/install \
      -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home gateway
COPY --from=build /install /usr/local
COPY policies /etc/gateway/policies
USER 10001
# One policy set: default.yaml. The folder also holds distillation-defense.yaml and the
# examples; pointing GATEWAY_POLICIES at the folder would load both shipped sets at once.
# default.yaml believes identity headers from loopback only: mount a set that trusts your edge.
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_ADMIN_HOST=0.0.0.0 \
    GATEWAY_ADMIN_PORT=8081 \
    GATEWAY_POLICIES=/etc/gateway/policies/default.yaml \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8081
# Healthy once the gateway serves (/readyz); the slim image has no curl, so Python asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_ADMIN_PORT', '8081') + '/readyz', timeout=2)"]
ENTRYPOINT ["gateway", "serve"]
