# syntax=docker/dockerfile:1
# The one binary (`unified-connectors controller` / `collector` / `crds`) on a distroless, non-root base.
#   docker build -t ghcr.io/unified-connectors/unified-connectors:0.1.0 .
# The tag must match the chart's appVersion (charts/unified-connectors/Chart.yaml) and the workspace version.

# ---- build -------------------------------------------------------------------------------------------------
# The toolchain CI builds and tests with (edition 2024; the workspace needs 1.89 or newer).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build needs (see .dockerignore); the lock file pins every dependency.
COPY Cargo.toml Cargo.lock ./
COPY operator ./operator
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p unified-connectors --bin unified-connectors \
 && install -D -m 0755 target/release/unified-connectors /out/unified-connectors

# ---- runtime -----------------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and the CA bundle (/etc/ssl/certs, read by rustls' platform verifier for
# Okta and the products); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/unified-connectors/unified-connectors" \
      org.opencontainers.image.description="Collect each SaaS audit-log source once, deliver it to every security product" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/unified-connectors /usr/local/bin/unified-connectors
# 65532 = nonroot in distroless; the chart and config/manager run as this uid with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/unified-connectors"]
CMD ["controller"]
