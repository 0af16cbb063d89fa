# The sigil-signer and sigil-operator images: one stripped glibc binary each, on a base that holds
# only the dynamic loader, glibc, libgcc_s and the CA bundle, running as 65532 (non-root). glibc and
# its loader are there so that the signer can dlopen a PKCS#11 module that a user mounts or adds in
# a derived image (a static musl binary cannot; the module's own libraries come with it).
#
# Every base is local: no registry is needed. Build both with
#
#   e2e/images/build            # cargo build --release, strip, then the two docker builds below
#
# which amounts to:
#
#   e2e/images/rootfs runtime   # a Debian bookworm rootfs (debootstrap) imported as sigil-debian:runtime
#   docker build -f Dockerfile --target signer   -t sigil-signer:dev   CONTEXT
#   docker build -f Dockerfile --target operator -t sigil-operator:dev CONTEXT
#
# where CONTEXT is a directory holding the stripped x86_64 binaries `sigil-signer` and
# `sigil-operator` (e2e/images/build keeps it under ~/.cache/sigil/images/context). Only classic
# builder features are used (Debian's docker.io has no BuildKit client).
ARG RUNTIME_ROOTFS=sigil-debian:runtime

# The files the binaries need at run time, picked from the Debian rootfs (the rest of it stays out).
FROM ${RUNTIME_ROOTFS} AS runtime-files
RUN set -eu; \
    lib=/usr/lib/x86_64-linux-gnu; \
    mkdir -p /out/lib64 /out$lib /out/etc/ssl/certs; \
    cp -L /lib64/ld-linux-x86-64.so.2 /out/lib64/; \
    for so in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1; do \
      cp -L "$lib/$so" "/out$lib/"; \
    done; \
    cp -L /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' > /out/etc/passwd; \
    echo 'nonroot:x:65532:' > /out/etc/group; \
    echo 'hosts: files dns' > /out/etc/nsswitch.conf; \
    ln -s usr/lib /out/lib

FROM scratch AS base
COPY --from=runtime-files /out/ /
USER 65532:65532
LABEL org.opencontainers.image.source="https://github.com/sigil-dev/sigil" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM base AS signer
COPY sigil-signer /usr/bin/sigil-signer
EXPOSE 9090 9091
ENTRYPOINT ["/usr/bin/sigil-signer"]

FROM base AS operator
COPY sigil-operator /usr/bin/sigil-operator
ENTRYPOINT ["/usr/bin/sigil-operator"]
