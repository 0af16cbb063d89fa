# CoreDNS as kubeadm's Deployment runs it (it passes only arguments): the static binary on an
# empty base.
FROM scratch
COPY coredns /coredns
ENTRYPOINT ["/coredns"]
