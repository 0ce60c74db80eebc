#!/usr/bin/env python3
"""Three worker-llm replicas on three "hosts" (network namespaces joined to this one by veth pairs,
each with its own address) behind HAProxy, which health-checks /ready and sends each request to the
replica with the fewest connections (leastconn). 32 clients send a fixed number of chat requests; mid-run
one replica gets SIGTERM and another is cut off the network (its veth goes down).

Checked: every request ends in a full answer (200, the requested number of tokens) or a 503 with
Retry-After, never anything else and never a hang; the replica sent SIGTERM finishes every job it had
accepted (none cancelled) and exits 0; requests served per replica and error counts are printed.

Run by scripts/k8s/multihost-test.sh (root), which cleans up namespaces and processes however this
ends. Standard library only.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REPLICAS = ("w1", "w2", "w3")
# Each replica runs one job and queues WAITING more; HAProxy sends it at most that many requests at once
# (maxconn) and queues the rest itself, so a request's time on a replica stays a few jobs long.
WAITING = 2


def log(msg):
    print(f"[multihost {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def http(url, body=None, timeout=5.0):
    """(status, headers, body bytes); headers are looked up case-insensitively (HAProxy sends them in
    lower case); raises on transport errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def wait_until(what, deadline_s, probe, every=0.2):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(every)
    raise SystemExit(f"timed out after {deadline_s} s waiting for {what}")


def metric(text, name):
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
    return float(found.group(1)) if found else None


# Times a client asks again after a 503 with Retry-After before it gives up with that answer.
ATTEMPTS = 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-id", required=True, help="prefix of the namespaces and links (cleanup uses it)")
    ap.add_argument("--worker", required=True, help="the worker-llm binary")
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=330, help="seconds for the whole load phase")
    ap.add_argument("--subnet", default="10.231", help="replica N gets SUBNET.N.2/24, its host side .1")
    args = ap.parse_args()
    rid = args.run_id
    procs = {}
    addr = {}

    # ---- three hosts ----
    for i, name in enumerate(REPLICAS, start=1):
        ns, host_if, ns_if = f"{rid}-{name}", f"{rid}{name}h", f"{rid}{name}n"
        net = f"{args.subnet}.{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{net}.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", f"{net}.1")
        addr[name] = f"{net}.2"
        logf = open(os.path.join(args.workdir, f"{name}.log"), "w")
        env = dict(os.environ, RAYON_NUM_THREADS="1", RUST_LOG="info")
        procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", ns, args.worker, "serve", "--model-path", args.model_path,
             "--host", "0.0.0.0", "--port", "8080", "--concurrency", "1", "--max-waiting", str(WAITING),
             "--shutdown-grace-secs", "30", "--worker-id", name],
            stdout=logf, stderr=subprocess.STDOUT, env=env)
        log(f"{name}: pid {procs[name].pid} in netns {ns} at {addr[name]}:8080")
    for name in REPLICAS:
        wait_until(f"{name} /ready", 120,
                   lambda name=name: http(f"http://{addr[name]}:8080/ready", timeout=2)[0] == 200)
    log("all replicas ready")
    # One request on each replica, one at a time: how long a job takes on this machine now. HAProxy
    # gives up on a replica that has not answered within `timeout server`, so that must cover the jobs
    # ahead of a request on its replica (1 + WAITING) with room for the replicas competing for cores.
    job_s = 0.0
    for name in REPLICAS:
        t = time.monotonic()
        status, _, _ = http(f"http://{addr[name]}:8080/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "warm up"}],
                             "max_tokens": args.max_tokens, "ignore_eos": True}, timeout=120)
        if status != 200:
            raise SystemExit(f"{name}: warm-up request answered {status}")
        job_s = max(job_s, time.monotonic() - t)
    server_timeout = max(30, round(3 * (1 + WAITING) * job_s))
    log(f"one job takes {job_s:.2f} s here; HAProxy's timeout server: {server_timeout} s")

    # ---- the load balancer ----
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    lb_port = s.getsockname()[1]
    s.close()
    servers = "\n".join(f"  server {n} {addr[n]}:8080 check maxconn {1 + WAITING}" for n in REPLICAS)
    cfg = f"""global
  maxconn 2000
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  # Requests wait here for a free replica slot rather than in a replica's queue.
  timeout queue 300s
  # A replica cut off mid-request never answers: after this long (several jobs' time on this
  # machine) the request is retried elsewhere.
  timeout server {server_timeout}s
  retries 3
  option redispatch 1
  # Requests that never reached a model (refused connection, closed keep-alive, a replica that stopped
  # answering, a full queue) go to another replica; the body is buffered so it can be re-sent.
  retry-on conn-failure empty-response response-timeout 503
  option http-buffer-request
frontend llm
  bind 127.0.0.1:{lb_port}
  default_backend workers
  # HAProxy's own 503 (no replica up) says when to retry, like the workers' own.
  http-after-response set-header Retry-After 5 if {{ status 503 }} !{{ res.hdr(Retry-After) -m found }}
backend workers
  balance leastconn
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
  http-response set-header X-Served-By %[srv_name]
{servers}
"""
    with open(os.path.join(args.workdir, "haproxy.cfg"), "w") as f:
        f.write(cfg)
    sh("haproxy", "-c", "-f", os.path.join(args.workdir, "haproxy.cfg"))
    lb_log = open(os.path.join(args.workdir, "haproxy.log"), "w")
    lb = subprocess.Popen(["haproxy", "-db", "-f", os.path.join(args.workdir, "haproxy.cfg")],
                          stdout=lb_log, stderr=subprocess.STDOUT)
    with open(os.path.join(args.workdir, "haproxy.pid"), "w") as f:
        f.write(str(lb.pid))
    base = f"http://127.0.0.1:{lb_port}"
    wait_until("haproxy", 10, lambda: http(f"{base}/health", timeout=2)[0] == 200)
    log(f"haproxy (pid {lb.pid}) on 127.0.0.1:{lb_port}, leastconn, health check GET /ready")

    # ---- the clients ----
    total = args.requests
    next_index = [0]
    done = [0]
    lock = threading.Lock()
    results = []

    def client():
        while True:
            with lock:
                if next_index[0] >= total:
                    return
                index = next_index[0]
                next_index[0] += 1
            body = {"messages": [{"role": "user", "content": f"Request {index}: name a colour."}],
                    "max_tokens": args.max_tokens, "ignore_eos": True, "temperature": 0}
            outcome = {"index": index, "start": time.monotonic(), "refusals": 0}
            # A 503 with Retry-After is an answer: the client waits as told and asks again, a
            # bounded number of times; the request's outcome is its last answer.
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    status, headers, raw = http(f"{base}/v1/chat/completions", body,
                                                timeout=args.deadline)
                except Exception as err:  # a transport error: lost without an HTTP answer
                    outcome.update(status=None, server="-", kind="lost", error=repr(err))
                    break
                outcome.update(status=status, server=headers.get("X-Served-By", "-"),
                               retry_after=headers.get("Retry-After"))
                if status == 200:
                    answer = json.loads(raw)
                    choice = answer["choices"][0]
                    full = (choice["finish_reason"] == "length"
                            and answer["usage"]["completion_tokens"] == args.max_tokens
                            and isinstance(choice["message"]["content"], str))
                    outcome["kind"] = "full" if full else "partial"
                    break
                if status == 503 and outcome["retry_after"]:
                    outcome["kind"] = "503+retry-after"
                    outcome["refusals"] += 1
                    time.sleep(min(float(outcome["retry_after"]), 5.0))
                    continue
                outcome["kind"] = f"http {status}"
                outcome["body"] = raw[:300].decode(errors="replace")
                break
            outcome["end"] = time.monotonic()
            with lock:
                results.append(outcome)
                done[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()

    # ---- the disruptions ----
    wait_until("a quarter of the requests", args.deadline, lambda: done[0] >= total // 4, every=0.05)
    victim, cut = "w1", "w3"
    _, _, raw = http(f"http://{addr[victim]}:8080/metrics", timeout=5)
    text = raw.decode()
    before = (metric(text, "worker_jobs_running"), metric(text, "worker_queue_depth"))
    sigterm_at = time.monotonic()
    procs[victim].send_signal(signal.SIGTERM)
    # `ip netns exec` execs the worker, so the signal reaches it directly.
    log(f"SIGTERM -> {victim} (running {before[0]:.0f}, waiting {before[1]:.0f} just before)")

    wait_until("half of the requests", args.deadline, lambda: done[0] >= total // 2, every=0.05)
    # The replica's own end goes down: packets to it are dropped, as when a host loses its network.
    # (Taking the host end down would remove the route, and packets would follow the default route.)
    sh("ip", "netns", "exec", f"{rid}-{cut}", "ip", "link", "set", f"{rid}{cut}n", "down")
    cut_at = time.monotonic()
    log(f"{cut} cut off the network (its veth is down)")

    end = t0 + args.deadline
    for t in threads:
        t.join(timeout=max(0.0, end - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise SystemExit(f"clients still running after {args.deadline:.0f} s")
    elapsed = time.monotonic() - t0
    try:
        victim_rc = procs[victim].wait(timeout=60)
    except subprocess.TimeoutExpired:
        victim_rc = None

    # ---- the report ----
    by_server = {}
    by_kind = {}
    for r in results:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + 1
        if r["kind"] == "full":
            by_server[r["server"]] = by_server.get(r["server"], 0) + 1
    log(f"{len(results)} requests by {args.clients} clients in {elapsed:.1f} s "
        f"({args.max_tokens} tokens each)")
    for name in REPLICAS:
        log(f"  served by {name}: {by_server.get(name, 0)}")
    for kind, count in sorted(by_kind.items()):
        log(f"  outcome {kind}: {count}")
    log(f"  503 with Retry-After seen by clients (then retried): {sum(r['refusals'] for r in results)}")
    victim_after = sum(1 for r in results if r["server"] == victim and r["kind"] == "full"
                       and r["end"] > sigterm_at)
    victim_log = open(os.path.join(args.workdir, f"{victim}.log")).read()
    drained = re.search(r"shutting down: no new jobs.*?jobs=(\d+)", victim_log)
    jobs_at_drain = int(drained.group(1)) if drained else None
    log(f"{victim}: exit {victim_rc}; {jobs_at_drain} jobs when it stopped taking new ones; "
        f"{victim_after} of its answers completed after SIGTERM")
    cut_after = sum(1 for r in results if r["server"] == cut and r["start"] > cut_at + 2)

    failures = []
    if len(results) != total:
        failures.append(f"{total - len(results)} requests have no outcome")
    bad = [r for r in results if r["kind"] not in ("full", "503+retry-after")]
    for r in bad[:5]:
        failures.append(f"request {r['index']}: {r['kind']} {r.get('error') or r.get('body', '')}")
    if bad:
        failures.append(f"{len(bad)} requests neither fully answered nor 503 with Retry-After")
    if victim_rc != 0:
        failures.append(f"{victim} exited with {victim_rc} after SIGTERM (expected 0)")
    if jobs_at_drain is None:
        failures.append(f"{victim}'s log has no drain line")
    elif victim_after < jobs_at_drain:
        failures.append(f"{victim} had {jobs_at_drain} jobs at SIGTERM but only {victim_after} answers "
                        "completed after it")
    if "cancelling the running jobs" in victim_log:
        failures.append(f"{victim} cancelled jobs instead of finishing them")
    if cut_after:
        failures.append(f"{cut_after} requests sent after {cut} was cut off were answered by it")
    for name in REPLICAS:
        if by_server.get(name, 0) == 0:
            failures.append(f"{name} served nothing: the balancer did not spread the load")
    if procs[cut].poll() is not None:
        failures.append(f"{cut} died when cut off (it should only be unreachable)")
    lb.terminate()
    lb.wait(timeout=10)
    if failures:
        for f in failures:
            log(f"FAIL: {f}")
        sys.exit(1)
    log("PASS")


if __name__ == "__main__":
    main()
