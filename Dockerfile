# syntax=docker/dockerfile:1
# latchkey image: `docker build -t latchkey .` (docker-compose.yml builds it too).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY entity ./entity
COPY migration ./migration
COPY client ./client
COPY src ./src
# The pages the binary embeds (built and checked in; no Node needed here).
COPY ui/dist ./ui/dist
# Cargo.toml names tests/api/main.rs and benches/opaque.rs as targets: the
# manifest's targets must exist.
COPY tests ./tests
COPY benches ./benches
# The caches speed up rebuilds; the binary is copied out of the cached target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin latchkey \
    && install -m 0755 target/release/latchkey /usr/local/bin/latchkey

FROM debian:bookworm-slim
# curl is for the health check; libssl3 for webauthn-rs (passkeys), which
# links OpenSSL. Debian's stable packages, not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 latchkey \
    && useradd --system --uid 10001 --gid latchkey --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin latchkey \
    && mkdir -p /data \
    && chown latchkey:latchkey /data \
    && chmod 0700 /data
COPY --from=builder /usr/local/bin/latchkey /usr/local/bin/latchkey
# docker-compose.yml's entry point: checks the secret files, builds the
# database URL from a password file, then runs latchkey.
COPY --chmod=0755 deploy/compose-entrypoint /usr/local/bin/latchkey-compose-entrypoint

ENV LATCHKEY_DATA_DIR=/data \
    LATCHKEY_BIND=0.0.0.0:8080
WORKDIR /data
USER 10001:10001
EXPOSE 8080
# Shell form: curl's exit codes other than 0 become 1 (unhealthy).
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["latchkey"]
CMD ["serve"]
