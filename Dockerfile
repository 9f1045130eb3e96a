# syntax=docker/dockerfile:1
# hoardhaven: multi-stage build. Stage 1 compiles a release binary; stage 2 is a slim Debian
# with that binary only, run as an unprivileged user, data in the /data volume.
#   docker build -t hoardhaven .
#   docker run -p 127.0.0.1:8080:8080 -v hoardhaven-data:/data hoardhaven

FROM rust:1.95-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Dependencies first, so that editing src/ does not rebuild them: a stub crate with the real
# manifest and lock file.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && sed -n '/^\[\[bench\]\]/,/^name/s/^name *= *"\(.*\)"/\1/p' Cargo.toml \
       | while read -r b; do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked --bin hoardhaven \
    && rm -rf src benches
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin hoardhaven \
    && install -m 0755 target/release/hoardhaven /usr/local/bin/hoardhaven

FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 hoardhaven \
    && useradd --system --uid 10001 --gid hoardhaven --home-dir /data --shell /usr/sbin/nologin hoardhaven \
    && mkdir -p /data \
    && chown hoardhaven:hoardhaven /data
COPY --from=build /usr/local/bin/hoardhaven /usr/local/bin/hoardhaven
# Listen on every interface inside the container; publish the port on the host's loopback or
# behind a proxy. Logs as JSON lines on stderr.
ENV HOARDHAVEN_LISTEN=0.0.0.0:8080 \
    HOARDHAVEN_DATA_DIR=/data \
    HOARDHAVEN_LOG_FORMAT=json
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# SIGTERM: stop accepting, finish in-flight requests, sync, release the lock, exit 0.
STOPSIGNAL SIGTERM
# No curl in the image: bash's /dev/tcp speaks just enough HTTP for /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/hoardhaven"]
CMD ["serve"]
