# syntax=docker/dockerfile:1
# Hypervisor: the hypervisord FastCGI pool and hvctl. Used by docker-compose.yml (nginx in front).
#   docker build -t hypervisor .

ARG SWIFT_IMAGE=swift:6.2-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends libfcgi-dev libpq-dev libhiredis-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift Package.resolve[d] ./
COPY Sources ./Sources
# The manifest declares the test targets too, so their folders must exist.
COPY Tests ./Tests
# The static Swift runtime keeps the runtime image free of the toolchain's libraries.
RUN --mount=type=cache,target=/src/.build \
    swift build -c release --static-swift-stdlib --product hypervisord \
    && swift build -c release --static-swift-stdlib --product hvctl \
    && bin="$(swift build -c release --show-bin-path)" \
    && install -D -m 755 "$bin/hypervisord" /out/hypervisord \
    && install -D -m 755 "$bin/hvctl" /out/hvctl \
    && cp -R "$bin/Hypervisor_HVFastCGI.resources" /out/

FROM debian:bookworm-slim
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        libfcgi0ldbl libpq5 libhiredis0.14 libssl3 libstdc++6 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /var/lib/hypervisor --shell /usr/sbin/nologin hypervisor \
    && install -d -o hypervisor -g hypervisor -m 750 /var/lib/hypervisor
COPY --from=build /out/hypervisord /out/hvctl /usr/local/bin/
# openapi.json, served at /openapi.json, is a SwiftPM resource read from beside the binary.
COPY --from=build /out/Hypervisor_HVFastCGI.resources /usr/local/bin/Hypervisor_HVFastCGI.resources
USER hypervisor
WORKDIR /var/lib/hypervisor
ENV HV_STATE_DIR=/var/lib/hypervisor \
    HV_LISTEN=0.0.0.0:9000
EXPOSE 9000
# The master handles SIGTERM (stop) and SIGQUIT (graceful stop) and reaps its workers itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hypervisord"]
