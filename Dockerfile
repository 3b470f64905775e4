# One image with every presence binary; docker-compose.yml picks the command per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && for b in presence-migrate presence-registry connection-gateway notifier rest-facade presence-cli; do \
      cp "target/release/$b" /out/; done

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 presence
COPY --from=build /out/ /usr/local/bin/
USER presence
