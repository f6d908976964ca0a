# syntax=docker/dockerfile:1
#
# One image for every target: `hookstream serve ingest|evaluator|timer|dispatcher|all`.
# A static binary (CGO_ENABLED=0) on distroless, run as distroless's nonroot user (65532).
#
#   docker build -t hookstream:dev --build-arg VERSION="$(git describe --tags --always)" .
#
# (or `make image`). It needs BuildKit (the default builder since Docker Engine 23) for the
# cache mounts and the cross-compilation arguments. The build uses the go.work workspace less
# tools/charttest, the chart-test module, which .dockerignore leaves out of the context.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go work edit -dropuse=./tools/charttest \
 && CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOFLAGS=-buildvcs=false \
    go build -trimpath \
      -ldflags "-s -w -X github.com/hookstream/hookstream/services/hookstream/internal/cli.Version=${VERSION}" \
      -o /out/usr/bin/hookstream ./services/hookstream \
 && mkdir -p /out/var/lib/hookstream

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="hookstream" \
      org.opencontainers.image.description="Behavioural webhook campaigns on Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/hookstream/hookstream"
COPY --from=build /out/usr/bin/hookstream /usr/bin/hookstream
# Default home of the evaluator's and timer's Pebble state; owned by the runtime user so that a
# named volume mounted here starts writable. In Kubernetes a PVC is mounted here instead.
COPY --from=build --chown=65532:65532 /out/var/lib/hookstream /var/lib/hookstream
WORKDIR /var/lib/hookstream
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/bin/hookstream"]
CMD ["serve", "all"]
