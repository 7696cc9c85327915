# Build: docker build -t alpine-registry .
# Run:   docker run -p 8080:8080 -v registry-data:/data alpine-registry
FROM rust:1-bookworm AS build
WORKDIR /src
# What the build reads: the manifest names the examples (bench), askama compiles the
# templates in, sqlx embeds the migrations, the binary embeds config.example.toml.
# .ci/dockerfile-check.sh builds from exactly these paths.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY examples ./examples
COPY config.example.toml ./
RUN cargo build --release --locked

FROM debian:bookworm-slim
# CA certificates for object storage over HTTPS; libssl3, the OpenSSL that signs.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home registry \
    && mkdir -p /data && chown registry:registry /data
COPY --from=build /src/target/release/alpine-registry /usr/local/bin/alpine-registry
USER registry
ENV ALPINE_REGISTRY__SERVER__LISTEN=0.0.0.0:8080 \
    ALPINE_REGISTRY__STORAGE__DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["alpine-registry"]
CMD ["serve"]
