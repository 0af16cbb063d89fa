# Images for sigil-signer and sigil-operator: static musl binaries on a distroless base, running
# as a non-root user with nothing else inside.
#
#   docker build --target signer -t sigil-signer:dev .
#   docker build --target operator -t sigil-operator:dev .
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p sigil-signer -p sigil-operator --bins \
 && mkdir /out && cp target/x86_64-unknown-linux-musl/release/sigil-signer \
                     target/x86_64-unknown-linux-musl/release/sigil-operator /out/

FROM gcr.io/distroless/static-debian12:nonroot AS signer
COPY --from=build /out/sigil-signer /sigil-signer
USER 65532:65532
EXPOSE 9090 9091
ENTRYPOINT ["/sigil-signer"]

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/sigil-operator /sigil-operator
USER 65532:65532
ENTRYPOINT ["/sigil-operator"]
