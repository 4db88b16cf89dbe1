#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (`helm template … > FILE`) for what
broke the seeds' deployments (../shared/SPEC.md §1.9 and §2):

  - a pod without enableServiceLinks: false (injected SERVICE_PORT=tcp://…
    variables collided with settings: SPARK_MASTER_PORT)
  - localhost or 127.0.0.1 in any value a pod is given (inside a pod that
    is the pod itself)
  - a container without CPU and memory requests and limits, or a logpipe
    container without readiness and liveness probes
  - a StatefulSet whose serviceName is not a headless Service of the chart
    (pod hostnames that do not resolve)
  - a topic replication factor above the broker count
  - with --max-cpu/--max-memory: requests of the long-running pods summed
    above the budget (the seed's node was 87 % allocated)

Usage: check-rendered.py FILE [--max-cpu 500m] [--max-memory 512Mi]
Prints every problem and exits 1 when there is one. Needs PyYAML.
"""

import argparse
import re
import sys

import yaml


def cpu(value):
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def memory(value):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    return float(match.group(1)) * units.get(match.group(2), 1)


def pod_spec(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc["spec"]
    return None


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--max-cpu")
    parser.add_argument("--max-memory")
    args = parser.parse_args()
    with open(args.file) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    headless = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"
    }
    total_cpu = total_memory = 0.0
    brokers = None
    replication = []
    for doc in docs:
        name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
        spec = pod_spec(doc)
        if spec is None:
            continue
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{name}: enableServiceLinks is not false")
        for value in strings(spec):
            if re.search(r"\blocalhost\b|127\.0\.0\.1", value):
                problems.append(f"{name}: a pod is given {value!r}, which is the pod itself")
        if doc["kind"] == "StatefulSet" and doc["spec"].get("serviceName") not in headless | {
            s["metadata"]["name"] for s in docs if s["kind"] == "Service"
        }:
            problems.append(f"{name}: serviceName {doc['spec'].get('serviceName')!r} is no Service here")
        replicas = doc["spec"].get("replicas", 1)
        for container in spec.get("containers", []):
            where = f"{name} container {container['name']}"
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in resources.get(part, {}):
                        problems.append(f"{where}: no {part}.{res}")
            is_logpipe = "logpipe" in container.get("image", "")
            long_running = doc["kind"] not in ("CronJob", "Job")
            if is_logpipe and long_running:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problems.append(f"{where}: no {probe}")
            if long_running and "requests" in resources:
                total_cpu += replicas * cpu(resources["requests"].get("cpu", 0))
                total_memory += replicas * memory(resources["requests"].get("memory", 0))
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "KAFKA_PROCESS_ROLES" in env:
                brokers = replicas
            for key in ("LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR", "KAFKA_DEFAULT_REPLICATION_FACTOR"):
                if env.get(key):
                    replication.append((where, key, int(env[key])))
    for where, key, factor in replication:
        if brokers is not None and factor > brokers:
            problems.append(f"{where}: {key}={factor} but there are {brokers} brokers")
    if args.max_cpu and total_cpu > cpu(args.max_cpu) + 1e-9:
        problems.append(f"CPU requested {total_cpu * 1000:.0f}m is over {args.max_cpu}")
    if args.max_memory and total_memory > memory(args.max_memory):
        problems.append(f"memory requested {total_memory / 2**20:.0f}Mi is over {args.max_memory}")
    for problem in problems:
        print(problem)
    print(
        f"{len(docs)} resources; long-running pods request {total_cpu * 1000:.0f}m CPU "
        f"and {total_memory / 2**20:.0f}Mi; {len(problems)} problems",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
