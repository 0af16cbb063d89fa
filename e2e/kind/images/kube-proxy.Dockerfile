# kube-proxy with the userland it calls: iptables, ip6tables, their -save/-restore (the nft
# backend, as on the node) and conntrack, with their extension modules and the libraries they
# load, picked from the node rootfs. Nothing else of the rootfs comes along.
ARG NODE_ROOTFS=sigil-debian:node
FROM ${NODE_ROOTFS} AS files
RUN set -eu; \
    lib=/usr/lib/x86_64-linux-gnu; \
    progs="/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/conntrack"; \
    mkdir -p /out; \
    cp -a --parents /usr/sbin/iptables* /usr/sbin/ip6tables* /usr/sbin/xtables-* /usr/sbin/conntrack \
      /etc/alternatives/iptables* /etc/alternatives/ip6tables* $lib/xtables /out/; \
    for so in $(ldd $progs $lib/xtables/*.so | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u) \
        /lib64/ld-linux-x86-64.so.2; do \
      mkdir -p "/out$(dirname "$so")"; cp -L "$so" "/out$so"; \
    done; \
    for f in /etc/protocols /etc/services /etc/ethertypes; do \
      if [ -f "$f" ]; then cp --parents "$f" /out/; fi; \
    done

FROM scratch
COPY --from=files /out/ /
COPY kube-proxy /usr/local/bin/kube-proxy
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/kube-proxy"]
