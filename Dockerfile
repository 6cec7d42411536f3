# syntax=docker/dockerfile:1
# The one binary (`unified-connectors controller` / `collector` / `crds`) on a distroless, non-root base.
#   docker build -t ghcr.io/unified-connectors/unified-connectors:0.1.0 .
# Multi-arch (amd64 + arm64; each platform's stage runs natively or under QEMU, no cross linker needed):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     --sbom=true --provenance=mode=max \
#     -t ghcr.io/unified-connectors/unified-connectors:0.1.0 --push .
# The tag must match the chart's appVersion (charts/unified-connectors/Chart.yaml) and the workspace version.

# ---- build -------------------------------------------------------------------------------------------------
# The toolchain CI builds and tests with (edition 2024; the workspace needs 1.89 or newer).
FROM rust:1.95-bookworm AS build
# Set by buildx per platform; keeps each architecture's build cache apart.
ARG TARGETARCH
WORKDIR /src
# Only what the build needs (see .dockerignore); the lock file pins every dependency.
COPY Cargo.toml Cargo.lock ./
COPY operator ./operator
RUN --mount=type=cache,target=/usr/local/cargo/registry,id=cargo-registry-${TARGETARCH} \
    --mount=type=cache,target=/src/target,id=cargo-target-${TARGETARCH} \
    cargo build --release --locked -p unified-connectors --bin unified-connectors \
 && install -D -m 0755 target/release/unified-connectors /out/unified-connectors

# ---- runtime -----------------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and the CA bundle (/etc/ssl/certs, read by rustls' platform verifier for
# Okta and the products); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
# OCI image annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="unified-connectors" \
      org.opencontainers.image.description="Collect each SaaS audit-log source once, deliver it to every security product" \
      org.opencontainers.image.source="https://github.com/unified-connectors/unified-connectors" \
      org.opencontainers.image.url="https://github.com/unified-connectors/unified-connectors" \
      org.opencontainers.image.documentation="https://github.com/unified-connectors/unified-connectors#readme" \
      org.opencontainers.image.vendor="unified-connectors" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/unified-connectors /usr/local/bin/unified-connectors
# 65532 = nonroot in distroless; the chart and config/manager run as this uid with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/unified-connectors"]
CMD ["controller"]
