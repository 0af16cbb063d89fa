# A Kubernetes control-plane component (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd) as kubeadm's static pods run it: the static binary on an empty base, found through PATH
# (kubeadm's manifests name the command).
FROM scratch
ARG NAME
COPY ${NAME} /usr/local/bin/${NAME}
ENV PATH=/usr/local/bin
