#!/usr/bin/env python3
"""Runs the worker as the rendered manifests say, and probes it as the kubelet would, so the manifests
and the binaries cannot drift apart.

From the rendered Deployment it takes the init containers and the worker container: command, args,
env (values, ConfigMap keys from the rendered ConfigMaps, the pod's name), `$(VAR)` expansion as the
kubelet does it, volume mounts (each mountPath becomes a folder under a temporary directory), ports
and probes. It runs the init containers in order (each must exit 0), starts the worker, runs the
startup probe at its period until it succeeds within periodSeconds x failureThreshold, then the
readiness and liveness probes, checks the Prometheus annotations, PodMonitor, Service, InferencePool
and the autoscalers against the ports and metrics the worker really serves, sends one chat request,
then stops it as the kubelet does: the preStop command, then SIGTERM, and it must exit in time.

One substitution, stated: MODEL_ID is a `file:` id of the SmolLM2 GGUF that scripts/fetch-models.sh
caches, instead of the Hub id (no hub is reachable here); the commands, flags, paths and probes are the
manifests' own.

    python3 scripts/k8s/manifest_test.py RENDERED.yaml --bin-dir target/debug --model FILE
Must run in a network namespace of its own (scripts/k8s/manifests-test.sh does `unshare -n`), since the
worker listens on the manifests' fixed port.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def log(msg):
    print(f"[manifests] {msg}", flush=True)


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay as written."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def container_env(container, configmaps, pod_name, overrides):
    env = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(var["value"], env)
        elif "valueFrom" in var:
            source = var["valueFrom"]
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                if ref["name"] not in configmaps:
                    fail(f"{container['name']}: env {name} names ConfigMap {ref['name']}, not rendered")
                env[name] = configmaps[ref["name"]][ref["key"]]
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[name] = {"metadata.name": pod_name, "metadata.namespace": "default"}[path]
            elif "secretKeyRef" in source:
                if not source["secretKeyRef"].get("optional"):
                    fail(f"{container['name']}: env {name} needs a Secret the test does not have")
            else:
                fail(f"{container['name']}: env {name}: unsupported valueFrom {source}")
    env.update({k: v for k, v in overrides.items() if k in env})
    return env


def probe_once(probe, ports):
    get = probe.get("httpGet")
    if get is None:
        fail(f"probe without httpGet: {probe}")
    port = get["port"]
    port = ports[port] if isinstance(port, str) else port
    url = f"http://127.0.0.1:{port}{get.get('path', '/')}"
    try:
        with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as resp:
            return 200 <= resp.status < 400, resp.status
    except urllib.error.HTTPError as err:
        return 200 <= err.code < 400, err.code
    except OSError as err:
        return False, repr(err)


def run_probe(kind, probe, ports, proc):
    """The kubelet's loop: every periodSeconds, up to failureThreshold failures in a row."""
    period = probe.get("periodSeconds", 10)
    threshold = probe.get("failureThreshold", 3)
    time.sleep(probe.get("initialDelaySeconds", 0))
    for attempt in range(1, threshold + 1):
        ok, status = probe_once(probe, ports)
        if ok:
            return attempt
        if proc.poll() is not None:
            fail(f"{kind} probe: the worker exited with {proc.returncode}")
        time.sleep(period)
    fail(f"{kind} probe on {probe['httpGet']['path']} failed {threshold} times (last: {status})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model", required=True, help="a GGUF file; MODEL_ID becomes file:<it>")
    ap.add_argument("--override", action="append", default=[], metavar="NAME=VALUE",
                    help="replace an env value the manifests set (said in the output)")
    args = ap.parse_args()
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    workers = [d for d in by_kind["Deployment"]
               if any(c["name"] == "worker" for c in d["spec"]["template"]["spec"]["containers"])]
    if len(workers) != 1:
        fail(f"expected one Deployment with a `worker` container, found {len(workers)}")
    deployment = workers[0]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    pod_name = f"{deployment['metadata']['name']}-test-0"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    root = tempfile.mkdtemp(prefix="omc-manifests-")
    bin_dir = os.path.abspath(args.bin_dir)
    overrides = {"MODEL_ID": f"file:{os.path.abspath(args.model)}"}
    overrides.update(o.split("=", 1) for o in args.override)
    log(f"{args.rendered}: env overridden: {overrides}")

    def mounts_of(container):
        table = []
        for m in container.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(f"{container['name']}: mounts volume {m['name']}, which the pod lacks")
            host = os.path.join(root, "volumes", m["name"])
            os.makedirs(host, exist_ok=True)
            table.append((m["mountPath"].rstrip("/"), host))
        return table

    def localize(text, mounts):
        for path, host in mounts:
            if text == path or text.startswith(path + "/"):
                return host + text[len(path):]
        return text

    def argv_env(container):
        env = container_env(container, configmaps, pod_name, overrides)
        mounts = mounts_of(container)
        env = {k: localize(v, mounts) for k, v in env.items()}
        argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
        if not argv:
            fail(f"{container['name']}: no command; the image's CMD is not what the test runs")
        exe = os.path.join(bin_dir, argv[0])
        if not os.access(exe, os.X_OK):
            fail(f"{container['name']}: command {argv[0]!r} is not a binary this workspace builds "
                 f"(looked for {exe})")
        argv = [exe] + [localize(a, mounts) for a in argv[1:]]
        leftover = [a for a in argv if re.search(r"\$\([A-Za-z_]", a)]
        if leftover:
            fail(f"{container['name']}: unexpanded variables in {leftover}")
        full_env = {"PATH": os.environ["PATH"], "HOME": root, **env}
        return argv, full_env

    # ---- init containers ----
    for init in spec.get("initContainers", []):
        argv, env = argv_env(init)
        log(f"init container {init['name']}: {' '.join(argv)}")
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            fail(f"init container {init['name']} exited {done.returncode}: {done.stderr.strip()}")

    # ---- the worker ----
    container = next(c for c in spec["containers"] if c["name"] == "worker")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    if not ports:
        fail("the worker container names no port")
    argv, env = argv_env(container)
    log(f"worker: {' '.join(argv)}")
    log_path = os.path.join(root, "worker.log")
    proc = subprocess.Popen(argv, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        check_worker(deployment, container, ports, proc, by_kind, configmaps)
    except SystemExit:
        proc.kill()
        print(open(log_path).read()[-3000:], file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    log("PASS")


def check_worker(deployment, container, ports, proc, by_kind, configmaps):
    spec = deployment["spec"]["template"]["spec"]
    started = time.monotonic()
    attempts = run_probe("startup", container["startupProbe"], ports, proc)
    log(f"startup probe {container['startupProbe']['httpGet']['path']} passed on attempt {attempts} "
        f"({time.monotonic() - started:.1f} s)")
    for kind in ("readinessProbe", "livenessProbe"):
        run_probe(kind, container[kind], ports, proc)
        log(f"{kind} {container[kind]['httpGet']['path']} passes")

    # Prometheus annotations and PodMonitor point at the worker's real /metrics.
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true":
        fail("the pod template lacks prometheus.io/scrape: \"true\"")
    metrics_url = (f"http://127.0.0.1:{annotations['prometheus.io/port']}"
                   f"{annotations.get('prometheus.io/path', '/metrics')}")
    metrics = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for name in ("worker_queue_depth", "worker_jobs_running"):
        if not re.search(rf"^{name}\b", metrics, re.M):
            fail(f"{metrics_url} has no {name}")
    log(f"prometheus.io annotations scrape {metrics_url} ({len(metrics)} bytes)")
    for pm in by_kind.get("PodMonitor", []):
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            if endpoint["port"] not in ports:
                fail(f"PodMonitor {pm['metadata']['name']} scrapes port {endpoint['port']}, not a port")
            url = f"http://127.0.0.1:{ports[endpoint['port']]}{endpoint.get('path', '/metrics')}"
            if "worker_jobs_running" not in urllib.request.urlopen(url, timeout=5).read().decode():
                fail(f"PodMonitor endpoint {url} does not serve the worker's metrics")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector):
        return all(labels.get(k) == v for k, v in selector.items())

    for svc in by_kind.get("Service", []):
        if selects(svc["spec"].get("selector", {})) and "epp" not in svc["metadata"]["name"]:
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if isinstance(target, str) and target not in ports:
                    fail(f"Service {svc['metadata']['name']} targets port {target}, not a container port")
    for pool in by_kind.get("InferencePool", []):
        if not selects(pool["spec"]["selector"]["matchLabels"]):
            fail(f"InferencePool {pool['metadata']['name']} does not select the worker's pods")
        for tp in pool["spec"]["targetPorts"]:
            if tp["number"] not in ports.values():
                fail(f"InferencePool targets port {tp['number']}; the worker serves {ports}")
        epp = pool["spec"]["endpointPickerRef"]["name"]
        if not any(s["metadata"]["name"] == epp for s in by_kind.get("Service", [])):
            fail(f"InferencePool's endpoint picker Service {epp} is not rendered")
    # The scheduler-facing gauge names the autoscalers and the endpoint picker use.
    wanted = {"worker_requests_waiting", "worker_requests_running", "worker_kv_cache_usage_ratio"}
    epp_config = "\n".join(v for cm in configmaps.values() for v in cm.values())
    for name in wanted:
        if name not in epp_config:
            fail(f"the endpoint picker's config does not read {name}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        names = {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "External"}
        if not names <= wanted:
            fail(f"HPA scales on {names}, not the worker's gauges")
    for so in by_kind.get("ScaledObject", []):
        for trigger in so["spec"]["triggers"]:
            if not any(name in trigger["metadata"]["query"] for name in wanted):
                fail(f"ScaledObject trigger query {trigger['metadata']['query']} reads no worker gauge")

    # The model answers through the container port.
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
    if not answer.get("choices"):
        fail(f"no choices in the chat answer: {answer}")
    log("chat completion through the container port answers")

    # Termination as the kubelet does it: preStop, then SIGTERM, all within the grace period.
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = int(container["args"][container["args"].index("--shutdown-grace-secs") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pre_stop_secs = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    # The worker cancels jobs after the drain and waits up to 10 s more for them to stop.
    if grace <= pre_stop_secs + drain + 10:
        fail(f"terminationGracePeriodSeconds {grace} does not cover preStop {pre_stop_secs} s + drain "
             f"{drain} s + 10 s of cancellation")
    t0 = time.monotonic()
    if shutil.which(pre_stop[0]) is None:
        fail(f"preStop command {pre_stop[0]} is not on PATH")
    subprocess.run(pre_stop, check=True, timeout=grace)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=max(1, grace - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        fail(f"the worker outlived terminationGracePeriodSeconds ({grace} s); the kubelet would SIGKILL it")
    if rc != 0:
        fail(f"the worker exited {rc} on SIGTERM")
    log(f"preStop ({' '.join(pre_stop)}) + SIGTERM: exited 0 after {time.monotonic() - t0:.1f} s "
        f"(grace {grace} s)")


if __name__ == "__main__":
    main()
