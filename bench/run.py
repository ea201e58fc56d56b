#!/usr/bin/env python3
"""make bench: wrk through nginx against a private stack, plus the scheduler micro-benchmarks.

Every HTTP figure is printed with its ratio to nginx answering a static response itself, measured in the
same run on the same machine, because absolute numbers vary between machines.

    bench/run.py [--duration SECONDS] [--connections N] [--only NAME,...]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACK = os.path.join(ROOT, "scripts", "stack.sh")
BINARY = os.path.join(ROOT, ".build", "release", "hypervisord")


class Stack:
    """A private PostgreSQL, Redis, nginx and hypervisord under a temporary state directory."""

    def __init__(self, extra_env):
        self.state = tempfile.mkdtemp(prefix="hvb-", dir="/tmp")
        os.chmod(self.state, 0o755)
        self.port = int(subprocess.check_output([STACK, "free-port"], text=True).strip())
        self.env = dict(os.environ, HV_STATE_DIR=self.state, HV_PORT=str(self.port))
        self.master = None
        self.extra_env = extra_env

    def sh(self, *args, capture=False):
        if capture:
            return subprocess.check_output([STACK, *args], env=self.env, text=True).strip()
        subprocess.check_call([STACK, *args], env=self.env)

    def start(self):
        self.sh("postgres-start")
        self.sh("redis-start")
        env = dict(
            self.env,
            SQL_DB_URL=self.sh("postgres-url", capture=True),
            REDIS_HOST=os.path.join(self.state, "run", "redis.sock"),
            JWT_SECRET_KEY=self.sh("secret", capture=True),
            HV_LOG_FILE=os.path.join(self.state, "log", "hypervisor.log"),
            HV_LOG_LEVEL="warning",
            **self.extra_env,
        )
        self.master = subprocess.Popen(
            [BINARY, "--pid-file", os.path.join(self.state, "run", "hypervisord.pid")], env=env, cwd=self.state
        )
        self.sh("nginx-start")
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the stack did not become ready; see " + self.state + "/log")

    def stop(self):
        if self.master:
            self.master.send_signal(signal.SIGTERM)
            self.master.wait(timeout=30)
        for step in ("nginx-stop", "redis-stop", "postgres-stop"):
            subprocess.call([STACK, step], env=self.env)
        shutil.rmtree(self.state, ignore_errors=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def worker_rss_kib(self):
        pids = subprocess.run(["pgrep", "-P", str(self.master.pid)], capture_output=True, text=True).stdout.split()
        sizes = {}
        for pid in pids:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        sizes[int(pid)] = int(line.split()[1])
        return sizes


def parse_wrk(output):
    """req/s, p50 ms, p99 ms, non-2xx count, total requests from `wrk --latency` output."""

    def ms(text):
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failures = int(non2xx.group(1)) if non2xx else 0
    if errors:
        failures += sum(int(x) for x in errors.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": failures, "total": total}


def wrk(url, duration, connections, headers=(), script=None, threads=2):
    command = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", script]
    command.append(url)
    return parse_wrk(subprocess.check_output(command, text=True))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--memory-requests", type=int, default=1_000_000)
    args = parser.parse_args()

    # Recycling is off so that the memory check watches the same processes over the whole run.
    stack = Stack({"HV_MAX_REQUESTS": "0", "HV_WORKERS": os.environ.get("HV_WORKERS", "8")})
    rows = []
    try:
        stack.start()
        c, d = args.connections, args.duration
        wrk(stack.url("/__static"), 3, c)  # warm-up
        ceiling = wrk(stack.url("/__static"), d, c)
        rows.append(("nginx static (ceiling)", ceiling))
        wrk(stack.url("/"), 3, c)
        rows.append(("GET /", wrk(stack.url("/"), d, c)))
        rows.append(("GET /readyz", wrk(stack.url("/readyz"), d, c)))

        print_table(rows, ceiling, c, d)
        memory(stack, args.memory_requests, c)
    finally:
        stack.stop()


def print_table(rows, ceiling, connections, duration):
    print(f"\nwrk through nginx, {connections} connections, {duration} s each, {os.cpu_count()} cores\n")
    print("| benchmark | req/s | × ceiling | p50 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['rps']:,.0f} | {r['rps'] / ceiling['rps']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} |"
            f" {r['non2xx']} |"
        )
    sys.stdout.flush()


def memory(stack, requests, connections):
    """Each worker's resident size before and after `requests` more GET / requests."""
    before = stack.worker_rss_kib()
    served = 0
    while served < requests:
        served += wrk(stack.url("/"), 10, connections)["total"]
    after = stack.worker_rss_kib()
    print(f"\nworker RSS over {served:,} requests of GET / (KiB, recycling off):\n")
    print("| worker pid | before | after | change |")
    print("|---:|---:|---:|---:|")
    for pid in sorted(before):
        if pid in after:
            change = (after[pid] - before[pid]) / before[pid] * 100
            print(f"| {pid} | {before[pid]:,} | {after[pid]:,} | {change:+.1f}% |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
