#!/usr/bin/env python3
"""Creates pods through the API server in rounds of three, on one kept-alive connection, and prints
their create latencies (microseconds):

- labelled: a plain pod labelled for the sigil webhook, which injects the signer;
- plain: the same pod unlabelled (never sent to the webhook);
- preinjected: the pod the webhook made of the first labelled one, created unlabelled, so it
  reaches storage as large as a labelled one but without the webhook's call.

`added` is labelled minus plain (what a user sees); `webhook_call` is labelled minus preinjected
(the admission round trip and the patch's application); `larger_pod` is preinjected minus plain
(storing and returning the pod with a sidecar). Rounds rotate which kind goes first, so that all
see the same load; the first `warmup` rounds are not counted. Pods name a scheduler that does not
exist, so that none is scheduled or started meanwhile: only their creation is measured.

    pod-creates.py SERVER CA CERT KEY NAMESPACE SIGNER ROUNDS [WARMUP]
"""
import copy
import http.client
import json
import ssl
import sys
import time
import urllib.parse

KINDS = ("labelled", "plain", "preinjected")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[int((len(ordered) - 1) * q)]


def main():
    server, ca, cert, key, namespace, signer, rounds = sys.argv[1:8]
    rounds = int(rounds)
    warmup = int(sys.argv[8]) if len(sys.argv) > 8 else 20
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    url = urllib.parse.urlsplit(server)
    connection = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=30)
    path = f"/api/v1/namespaces/{namespace}/pods"

    def create(pod):
        body = json.dumps(pod)
        started = time.perf_counter_ns()
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        elapsed = (time.perf_counter_ns() - started) // 1000
        if response.status != 201:
            sys.exit(f"creating {pod['metadata']['name']}: {response.status} {answer[:500]!r}")
        return elapsed, json.loads(answer)

    def plain_pod(labels):
        spec = {"schedulerName": "sigil-bench-none", "containers": [{"name": "node", "image": "atto/node"}]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": labels}, "spec": spec}

    def injected(pod):
        names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
        return "sigil-signer" in names

    templates = {"labelled": plain_pod({"sigil.dev/signer": signer}), "plain": plain_pod({"app": "plain"})}
    _, first = create(dict(templates["labelled"], metadata={"name": "template", "labels": {"sigil.dev/signer": signer}}))
    if not injected(first):
        sys.exit("the webhook did not inject the first labelled pod")
    templates["preinjected"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app": "preinjected"}, "annotations": first["metadata"].get("annotations", {})},
        "spec": first["spec"],
    }

    times = {kind: [] for kind in KINDS}
    injected_count = 0
    for i in range(warmup + rounds):
        for kind in KINDS[i % 3:] + KINDS[: i % 3]:
            pod = copy.deepcopy(templates[kind])
            pod["metadata"]["name"] = f"{kind}-{i}"
            elapsed, created = create(pod)
            if kind == "labelled":
                injected_count += injected(created)
            if i >= warmup:
                times[kind].append(elapsed)

    def at(q):
        return {kind: percentile(times[kind], q) for kind in KINDS}

    p50, p99 = at(0.5), at(0.99)
    report = {kind: {"p50_us": p50[kind], "p99_us": p99[kind], "max_us": max(times[kind])} for kind in KINDS}
    report["rounds"] = rounds
    report["added_p50_us"] = p50["labelled"] - p50["plain"]
    report["added_p99_us"] = p99["labelled"] - p99["plain"]
    report["webhook_call_p50_us"] = p50["labelled"] - p50["preinjected"]
    report["webhook_call_p99_us"] = p99["labelled"] - p99["preinjected"]
    report["larger_pod_p50_us"] = p50["preinjected"] - p50["plain"]
    report["injected"] = f"{injected_count} of {warmup + rounds}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
