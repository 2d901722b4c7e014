# syntax=docker/dockerfile:1
# The sluice image: one binary for every role (standalone, ingress, worker, operator),
# run as a non-root user, nothing else in it. See "The container image" in README.md:
#   docker build -t REGISTRY/sluice:TAG .
# tests/image.rs holds this file to its promises: the build command is the one
# scripts/test runs (so CI proves it works with the lock file), the toolchain is
# Cargo.toml's rust-version, and only the binary reaches the runtime image.

# Cargo.toml's rust-version, on the Debian release of the runtime image (bookworm is
# debian12), so that the binary needs no newer glibc than the runtime has. The slim
# image brings gcc and libc6-dev: all the C that ring (the only native code) needs.
FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the crates and the build tree from one build to the next; the
# binary leaves the cached target directory within the same step. The release profile
# keeps line tables (debug = 1), some 130 MB of a 160 MB binary: the image's copy goes
# without them, keeping the symbols that name functions in a backtrace.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin sluice \
    && strip --strip-debug -o /usr/local/bin/sluice target/release/sluice

# glibc, libgcc, CA certificates and /etc/passwd entries for nonroot (65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
# --build-arg VERSION=… REVISION=$(git rev-parse HEAD) CREATED=$(date -u +%FT%TZ)
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="A Kubernetes-native SMTP relay" \
      org.opencontainers.image.source="https://github.com/sluice-relay/sluice" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=builder /usr/local/bin/sluice /usr/local/bin/sluice
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 65532:65532
# The unprivileged ports the chart maps 25, 587 and 465 to, and the admin listener.
EXPOSE 2525 2587 2465 9090
ENTRYPOINT ["sluice"]
