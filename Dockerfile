# Multi-stage build of both binaries: static, non-root, distroless.
#   docker build --target manager -t mediafleet/manager:dev .
#   docker build --target mediaserver -t mediafleet/mediaserver:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY controllers/ controllers/
COPY mediaserver/ mediaserver/
COPY cmd/ cmd/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/mediafleet/mediafleet/mediaserver/server.Version=${VERSION}" -o /out/mediaserver ./cmd/mediaserver

FROM gcr.io/distroless/static:nonroot AS manager
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

FROM gcr.io/distroless/static:nonroot AS mediaserver
COPY --from=build /out/mediaserver /mediaserver
USER 65532:65532
EXPOSE 8080 9090 50000/udp
ENTRYPOINT ["/mediaserver"]
