# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image with cached dependencies, run in a slim image as
# a non-root user. Builds from the repository alone; nothing prebuilt is downloaded.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The cache mounts keep the crates.io registry and compiled dependencies between builds, so a
# source change rebuilds only this crate.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin firehose-relay \
 && cp target/release/firehose-relay /usr/local/bin/firehose-relay

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 relay \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin relay \
 && mkdir -p /var/lib/firehose-relay /etc/firehose-relay \
 && chown relay:relay /var/lib/firehose-relay
COPY --from=build /usr/local/bin/firehose-relay /usr/local/bin/firehose-relay
COPY conf/relay.toml /etc/firehose-relay/relay.toml
USER 10001:10001
VOLUME ["/var/lib/firehose-relay"]
# 24224: forward protocol (TCP, and UDP heartbeat). 24231: /metrics /healthz /readyz /status.
EXPOSE 24224/tcp 24224/udp 24231/tcp
# Probes: Kubernetes uses GET /healthz (liveness) and GET /readyz (readiness) on 24231, see
# conf/kubernetes/statefulset.yaml. Docker's HEALTHCHECK is not used by Kubernetes and would
# need curl in the image.
ENTRYPOINT ["/usr/local/bin/firehose-relay"]
CMD ["run", "--config", "/etc/firehose-relay/relay.toml"]
