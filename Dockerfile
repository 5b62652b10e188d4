# syntax=docker/dockerfile:1
#
# Sesame in a container: one static binary on distroless, running as a
# non-root user. How to run it: docs/install.md ("In a container").
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t sesame .
#
# Build stage. It runs on the build machine's own platform and cross-compiles
# for the target one (docker buildx build --platform linux/amd64,linux/arm64).
# The build command itself is packaging/build.sh, the same one the install
# guide and packaging/packaging_test.go run, so all three build the same way.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, in their own layer: a change to the code does not fetch them
# again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION OUT=/out sh packaging/build.sh
# The data directory, owned by the image's user: a new named volume mounted
# there starts as a copy of it, owner and mode included.
RUN mkdir -m 0700 /out/data

# Final stage: distroless "static" rather than scratch. It has what Sesame
# needs besides itself, kept up to date by its maintainers: CA certificates
# (the relay checks the certificates of the servers it delivers to, and of a
# smarthost), /etc/passwd and /etc/group with the user nonroot (65532:65532),
# time zone data, and a writable /tmp. No shell and no package manager: an
# attacker who gets in finds nothing to use. (Pin it by digest,
# static-debian12:nonroot@sha256:..., for builds that must be reproducible.)
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="Sesame" \
      org.opencontainers.image.description="Self-hosted Amazon SES replacement: SMTP submission, DKIM signing, durable queue and delivery" \
      org.opencontainers.image.source="https://github.com/sesame-mail/sesame" \
      org.opencontainers.image.version=$VERSION

COPY --from=build /out/sesame /usr/local/bin/sesame
# The example production configuration. Mount your own over it, read-only:
#   -v /etc/sesame/sesame.toml:/etc/sesame/sesame.toml:ro
COPY packaging/sesame.toml /etc/sesame/sesame.toml
COPY --from=build --chown=65532:65532 /out/data /var/lib/sesame

# nonroot (65532:65532) from distroless' /etc/passwd. `docker exec` runs the
# admin commands (sesame user create ...) as this user too, so the files
# they write in the store are the server's.
USER nonroot:nonroot
WORKDIR /var/lib/sesame
VOLUME /var/lib/sesame

# 587 (STARTTLS) and 465 (TLS) are below 1024, yet a non-root user may listen
# on them: Docker (since 20.10) sets net.ipv4.ip_unprivileged_port_start=0
# in each container's network namespace. 8025: /healthz and verification
# links; publish it on the host's loopback only (-p 127.0.0.1:8025:8025) with
# [http] listen = "0.0.0.0:8025" in the configuration. 8443: the SES-compatible
# API (docs/api.md), with [api] listen = "0.0.0.0:8443".
EXPOSE 587 465 8025 8443

# No shell, no curl in distroless: the binary checks itself. It asks
# GET /healthz of the [http] listener named in the configuration (200 while
# the store answers) and exits 0, or 1 when it gets no 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/sesame", "healthcheck", "--config", "/etc/sesame/sesame.toml"]

# SIGTERM (Docker's default stop signal) stops serve cleanly: it waits up to
# 20 s for SMTP sessions. Give it that time: docker run --stop-timeout 60, or
# stop_grace_period: 60s in Compose (Docker's default is 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sesame"]
CMD ["serve", "--config", "/etc/sesame/sesame.toml"]
