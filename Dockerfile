# syntax=docker/dockerfile:1
#
# The floodway image: the `floodway` binary on Debian bookworm (slim), run as a non-root user.
# One image for every role: `serve` (the default command), `worker`, and the admin commands.
#
#   docker build -t floodway .
#   docker run --rm -p 7700:7700 -v floodway-data:/var/lib/floodway floodway serve --insecure
#
# docs/deploy.md explains the image, the compose file and the Kubernetes manifests.

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm

# --- chef: the Rust toolchain with cargo-chef, which turns the workspace's manifests into a
# recipe so the dependencies build in a layer of their own (cached until Cargo.lock or a
# manifest changes, not on every source edit).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# --- planner: the recipe (the manifests and lock file, with the sources stripped out).
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin floodway

# --- builder: dependencies first (cached layer), then floodway itself.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p floodway-cli --bin floodway
COPY . .
RUN cargo build --release --locked -p floodway-cli --bin floodway \
    && install -D -m 0755 target/release/floodway /out/floodway

# --- runtime: glibc from the same Debian release as the builder, CA certificates for TLS
# (rediss://, https servers), curl for the HEALTHCHECK, and nothing else.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Not pinned (DL3008): the release's current packages carry its security fixes, and a pinned
# version disappears from the archive when the next fix lands.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 floodway \
    && useradd --system --uid 10001 --gid floodway --home-dir /var/lib/floodway \
        --shell /usr/sbin/nologin floodway \
    && install -d -o floodway -g floodway -m 0750 /var/lib/floodway
COPY --from=builder /out/floodway /usr/local/bin/floodway

# The embedded broker's data directory (`floodway serve` without --broker). Mount a volume
# here: without one, the data lives and dies with the container.
ENV FLOODWAY_DATA=/var/lib/floodway
VOLUME ["/var/lib/floodway"]
WORKDIR /var/lib/floodway

# `floodway serve` listens on every interface in a container. With no [[tokens]] configured
# it then refuses to start unless given --insecure: configure tokens (docs/deploy.md).
ENV FLOODWAY_SERVE_LISTEN=0.0.0.0:7700
# The HTTP API (`serve`). Workers started with `--listen 0.0.0.0:9464` serve /metrics,
# /healthz and /readyz on 9464.
EXPOSE 7700 9464

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# Liveness of whatever this container runs: a server (the default URL) or a worker started
# with --listen (set FLOODWAY_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz). Over TLS, point
# it at https:// (curl trusts the system's CAs; add -k only for a self-signed test setup).
ENV FLOODWAY_HEALTHCHECK_URL=http://127.0.0.1:7700/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "curl --fail --silent --show-error --max-time 2 \"$FLOODWAY_HEALTHCHECK_URL\" > /dev/null || exit 1"]

# SIGTERM starts a graceful shutdown: the server stops accepting and lets requests finish;
# a worker stops reserving, lets running tasks finish within --grace-period, gives the rest
# back. Give the container longer than that to stop (docs/deploy.md, "Shutdown timing").
STOPSIGNAL SIGTERM

ENTRYPOINT ["floodway"]
CMD ["serve"]
