# ringmatch in a container: a multi-stage build of the `ringmatch` binary, run as `serve` with
# the data directory on a volume and the configuration mounted.
#
#   docker build -t ringmatch .
#   docker run --rm -p 8711:8711 -v ringmatch-data:/var/lib/ringmatch ringmatch
#   docker run --rm -p 8711:8711 -p 8710:8710 -v ringmatch-data:/var/lib/ringmatch \
#       -v "$PWD/my.toml:/etc/ringmatch/ringmatch.toml:ro" ringmatch
#
# The image's configuration (packaging/container.toml) listens for order entry on every
# address and keeps the admin listener on the container's loopback; to reach the admin HTTP
# and the dashboard from outside, mount a configuration whose admin.listen is 0.0.0.0:8710
# with admin.token_hash set (ringmatch hash-token). SIGTERM (docker stop) stops it cleanly;
# give it time to drain (docker stop --time 60). `crates/server/tests/packaging.rs` checks this
# file stays in step with the binary's flags and the packaged configuration.

FROM rust:1-bookworm AS build
WORKDIR /src
# librdkafka (bundled by rdkafka) builds from source with the C toolchain and cmake-free make.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends build-essential perl \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p ringmatch-server \
    && install -D -m 0755 target/release/ringmatch /out/ringmatch

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/ringmatch --shell /usr/sbin/nologin ringmatch \
    && install -d -o ringmatch -g ringmatch /var/lib/ringmatch /etc/ringmatch
COPY --from=build /out/ringmatch /usr/local/bin/ringmatch
COPY packaging/container.toml /etc/ringmatch/ringmatch.toml
USER ringmatch
VOLUME ["/var/lib/ringmatch"]
EXPOSE 8711 8710
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringmatch", "--config", "/etc/ringmatch/ringmatch.toml", "--data-dir", "/var/lib/ringmatch"]
CMD ["serve"]
