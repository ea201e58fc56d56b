#!/usr/bin/env python3
"""make bench: wrk through nginx against a private stack, plus the scheduler micro-benchmarks.

Every HTTP figure is printed with its ratio to nginx answering a static response itself, measured in the
same run on the same machine, because absolute numbers vary between machines.

    bench/run.py [--duration SECONDS] [--connections N] [--only GROUP,...] [--pg-stats] [--log-level LEVEL]

Groups: base (GET /, /readyz), read (authenticated cluster read), login, create (creates that fit, into one cluster
and over 10), queue (a cluster with 100,000 pending deployments against one with 100: creates, completions and
the v1 reads of a deep queue and of a big and an empty tenant's list), mixed (10 clusters), scheduler (the Swift micro-benchmarks), memory. The nginx static
ceiling is always measured.
Every write row also says where the machine's CPU went: how busy it was, CPU time per request for each part of the
stack, the rate that CPU time allows on this machine's cores, and how much of a request's mean latency it spent in a
worker (`cpu_profile`).

Environment: HV_BENCH_BINARY (default .build/release/hypervisord), HV_BENCH_SCHEDULER (default SchedulerBenchmark
next to it), HV_WORKERS (passed to the pool; unset: its default, 4 × cores).
"""
import argparse
import hashlib
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
BINARY = os.path.abspath(os.environ.get("HV_BENCH_BINARY") or os.path.join(ROOT, ".build", "release", "hypervisord"))
SCHEDULER_BENCHMARK = os.environ.get("HV_BENCH_SCHEDULER") or os.path.join(os.path.dirname(BINARY), "SchedulerBenchmark")
LUA = os.path.join(ROOT, "bench", "lua")
GROUPS = ("base", "read", "login", "create", "queue", "mixed", "scheduler", "memory")


class Stack:
    """A private PostgreSQL, Redis, nginx and hypervisord under a temporary state directory."""

    def __init__(self, extra_env, pg_stats=False, log_level="warning"):
        self.state = tempfile.mkdtemp(prefix="hvb-", dir="/tmp")
        os.chmod(self.state, 0o755)
        self.port = int(subprocess.check_output([STACK, "free-port"], text=True).strip())
        self.env = dict(os.environ, HV_STATE_DIR=self.state, HV_PORT=str(self.port))
        self.master = None
        self.extra_env = extra_env
        self.pg_stats = pg_stats
        self.log_level = log_level

    def sh(self, *args, capture=False):
        if capture:
            return subprocess.check_output([STACK, *args], env=self.env, text=True).strip()
        subprocess.check_call([STACK, *args], env=self.env)

    def start(self):
        self.sh("postgres-start")
        if self.pg_stats:
            self.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'", database="postgres")
            self.sh("postgres-stop")
            self.sh("postgres-start")
            self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.psql("ALTER SYSTEM SET pg_stat_statements.track_planning = on", database="postgres")
            self.psql("SELECT pg_reload_conf()", database="postgres")
        self.sh("redis-start")
        env = dict(
            self.env,
            SQL_DB_URL=self.sh("postgres-url", capture=True),
            REDIS_HOST=os.path.join(self.state, "run", "redis.sock"),
            JWT_SECRET_KEY=self.sh("secret", capture=True),
            HV_LOG_FILE=os.path.join(self.state, "log", "hypervisor.log"),
            HV_LOG_LEVEL=self.log_level,
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

    def psql(self, sql, database="hypervisor"):
        """Rows of a query run as the PostgreSQL superuser, for seeding checks and reading ids (never for writes the
        scheduler should make)."""
        output = subprocess.check_output(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", os.path.join(self.state, "run"),
             "-U", "postgres", "-d", database, "-c", sql],
            text=True,
        )
        return [line.split("\t") for line in output.splitlines() if line]

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

    def worker_seconds(self):
        """(Σ seconds, count) of every request the pool has served, from `/metrics` (in a worker: from accepting the
        request to having written its response, a wait for a cluster's lock included)."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=30) as response:
            text = response.read().decode()
        sums = re.findall(r"^hv_request_duration_seconds_(sum|count)\{[^}]*\} (\S+)$", text, re.M)
        return (sum(float(v) for kind, v in sums if kind == "sum"), sum(int(v) for kind, v in sums if kind == "count"))

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
    avg = ms(re.search(r"Latency\s+(\S+)", output).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failures = int(non2xx.group(1)) if non2xx else 0
    if errors:
        failures += sum(int(x) for x in errors.groups())
    return {"rps": rps, "avg": avg, "p50": p50, "p99": p99, "non2xx": failures, "total": total}


def wrk(url, duration, connections, headers=(), script=None, threads=2, env=None):
    command = ["wrk", "--latency", "--timeout", "30s", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", os.path.join(LUA, script)]
    command.append(url)
    run_env = dict(os.environ, BENCH_THREADS=str(threads), **(env or {}))
    return parse_wrk(subprocess.check_output(command, text=True, env=run_env))


# Process names (as in /proc/<pid>/stat) by the part of the stack they are.
CPU_CLASSES = {"postgres": "PostgreSQL", "hypervisord": "workers", "nginx": "nginx", "redis-server": "Redis"}


def cpu_profile(run, stack):
    """Runs `run()` (one wrk) and returns its result and a note on where the machine's CPU went meanwhile: how busy
    it was, and CPU time per request, in total and for each part of the stack (wrk from this process's reaped
    children), and the hypervisor's steal (time other machines had these CPUs: a slow quarter hour shows there).
    On 2 cores, 2 s of CPU per second bounds the rate at 2,000,000 / (µs per request), at 100 % busy.
    The note also says how much of a request's mean latency it spent in a worker; the rest it waited for a free
    worker in the FastCGI listen queue (with more connections than workers, that is where a closed loop queues)."""
    hz = os.sysconf("SC_CLK_TCK")

    def sample():
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        parts = dict.fromkeys(CPU_CLASSES.values(), 0.0)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue  # exited meanwhile
            name = text[text.index("(") + 1:text.rindex(")")]
            part = CPU_CLASSES.get(name)
            if part:
                after_name = text[text.rindex(")") + 2:].split()
                parts[part] += (int(after_name[11]) + int(after_name[12])) / hz  # utime + stime
        children = os.times()
        parts["wrk"] = children.children_user + children.children_system
        # /proc/stat's steal column (in the busy total too).
        parts["steal"] = fields[7] / hz
        return sum(fields) / hz, (fields[3] + fields[4]) / hz, parts  # total, idle + iowait, per part

    worker0 = stack.worker_seconds()
    total0, idle0, parts0 = sample()
    result = run()
    total1, idle1, parts1 = sample()
    worker1 = stack.worker_seconds()
    in_worker = (worker1[0] - worker0[0]) / max(1, worker1[1] - worker0[1] - 1) * 1000  # less the first scrape
    busy_seconds = (total1 - total0) - (idle1 - idle0)
    per_request = 1e6 / max(1, result["total"])
    split = {part: (parts1[part] - parts0[part]) * per_request for part in parts1}
    split["other"] = max(0.0, busy_seconds * per_request - sum(split.values()))  # /proc counts in clock ticks
    cores = os.cpu_count()
    note = (f"CPU {busy_seconds / max(1e-9, total1 - total0):.0%} busy, {busy_seconds * per_request:,.0f} µs per"
            f" request (" + ", ".join(f"{part} {value:,.0f}" for part, value in split.items())
            + f"): ≤ {cores * 1e6 / max(1, busy_seconds * per_request):,.0f}/s on {cores} cores at 100 %;"
            f" {in_worker:.1f} ms of the mean {result['avg']:.1f} ms in a worker")
    return result, note


class Row:
    """One line of the table: a wrk result (or a bare latency), the targets it is checked against, and notes."""

    def __init__(self, name, result, connections, targets=None, note=""):
        self.name, self.result, self.connections = name, result, connections
        self.targets = targets or {}
        self.note = note


# Targets from the brief / OPERATIONS.md, checked per row.
def check(row, ceiling, baseline=None):
    r, t, misses = row.result, row.targets, []
    if "rps" in t and r["rps"] < t["rps"]:
        misses.append(f"req/s < {t['rps']:,}")
    if "p99" in t and r["p99"] >= t["p99"]:
        misses.append(f"p99 ≥ {t['p99']} ms")
    if t.get("no_errors") and r["non2xx"]:
        misses.append("non-2xx")
    if "ratio" in t and r["rps"] / ceiling["rps"] < t["ratio"]:
        misses.append(f"< {t['ratio']}× ceiling")
    if baseline is not None and r["rps"] < baseline["rps"] / 2:
        misses.append("< ½ of the 100-pending row")
    if not t and baseline is None:
        return ""
    return "ok" if not misses else "MISS: " + ", ".join(misses)


class Bench:
    def __init__(self, stack, duration, connections, pending):
        self.stack, self.d, self.c, self.pending = stack, duration, connections, pending
        self.tag = format(int(time.time()) % 100000, "05d")
        self.notes = [
            "counts below are read from PostgreSQL; they may exceed the 2xx wrk counted by up to one request per"
            " connection (requests in flight when wrk stopped counting still complete)."
        ]

    # --- API helpers ---------------------------------------------------------------------------------------------

    def api(self, method, path, body=None, expect=(200, 201)):
        status, payload = self.stack.request(method, path, body, self.token if hasattr(self, "token") else None)
        if status not in expect:
            raise SystemExit(f"{method} {path} answered {status}: {payload}")
        return payload

    def setup_account(self):
        self.username, self.password = f"bench{self.tag}", "bench-password-" + self.tag
        self.api("POST", "/users/register/", {"username": self.username, "password": self.password})
        self.token = self.api("POST", "/users/login/", {"username": self.username, "password": self.password})[
            "access_token"
        ]
        self.auth = ("Authorization: Bearer " + self.token,)
        self.api("POST", "/organizations/create/", {"name": f"bench-org-{self.tag}"})

    def cluster(self, name, ram, cpu, gpu):
        body = {"name": f"{name}-{self.tag}", "total_ram": ram, "total_cpu": cpu, "total_gpu": gpu}
        return self.api("POST", "/clusters/create/", body)["id"]

    def counts(self, cluster):
        """{status: (count, Σ preemptions)} of one cluster, read from PostgreSQL."""
        rows = self.stack.psql(
            f"SELECT status, count(*), coalesce(sum(preemptions), 0) FROM deployments WHERE cluster_id = {int(cluster)}"
            " GROUP BY status"
        )
        counts = {status: (int(n), int(p)) for status, n, p in rows}
        for status in ("Running", "Pending", "Completed"):
            counts.setdefault(status, (0, 0))
        return counts

    def within(self, changed, answered):
        """Whether the database changed once per answered request, give or take the requests still in flight when wrk
        stopped counting (at most one per connection), which the server completes anyway."""
        return answered <= changed <= answered + self.c

    def status_of(self, deployment_id):
        return self.api("GET", f"/deployments/get_deployment/?id={deployment_id}")["status"]

    def create_env(self, clusters, prefix, ram=1, cpu=1, gpu=0, priority=0, step=0, limit=None, done=None):
        env = {
            "BENCH_CLUSTERS": ",".join(str(c) for c in clusters), "BENCH_PREFIX": f"{prefix}{self.tag}",
            "BENCH_RAM": str(ram), "BENCH_CPU": str(cpu), "BENCH_GPU": str(gpu), "BENCH_PRIORITY": str(priority),
            "BENCH_PRIORITY_STEP": str(step),
        }
        if limit is not None:
            env.update(BENCH_LIMIT=str(limit), BENCH_DONE=done)
        return env

    def create_wrk(self, duration, connections, env, threads=2):
        return wrk(self.stack.url("/"), duration, connections, self.auth, "create.lua", threads, env)

    def seed(self, cluster, count, prefix, connections=32, **request):
        """Creates `count` deployments through the API (wrk, two threads each creating at most half) and returns
        (seconds, failures). A request wrk gave up on (timeout, socket error) is made up for with single requests."""
        assert count % 2 == 0
        done = tempfile.mkdtemp(prefix="hvb-seed-")
        env = self.create_env([cluster], prefix, limit=count // 2, done=os.path.join(done, "done-"), **request)
        command = ["wrk", "--latency", "--timeout", "30s", "-t2", f"-c{connections}", "-d3600s", "-s",
                   os.path.join(LUA, "create.lua"), "-H", self.auth[0], self.stack.url("/")]

        def created():
            return int(self.stack.psql(f"SELECT count(*) FROM deployments WHERE cluster_id = {int(cluster)} AND name"
                                       f" LIKE '{prefix}{self.tag}-%'")[0][0])

        started = time.time()
        process = subprocess.Popen(command, env=dict(os.environ, BENCH_THREADS="2", **env), stdout=subprocess.PIPE,
                                   text=True)
        last, last_change, reported = -1, time.time(), time.time()
        try:
            while len(os.listdir(done)) < 2 and process.poll() is None:
                time.sleep(0.5)
                now = created()
                if now != last:
                    last, last_change = now, time.time()
                elif time.time() - last_change > 15:
                    break  # every create was sent but some answer never came: stop and make up for it
                if time.time() - reported > 15:
                    reported = time.time()
                    print(f"[seeding cluster {cluster}: {now:,}/{count:,} after {reported - started:.0f} s]",
                          file=sys.stderr, flush=True)
            process.send_signal(signal.SIGINT)  # wrk prints its statistics on SIGINT
            output = process.communicate(timeout=60)[0]
        finally:
            if process.poll() is None:
                process.kill()
            shutil.rmtree(done, ignore_errors=True)
        failures = parse_wrk(output)["non2xx"]
        missing = count - created()
        for i in range(max(0, missing)):
            body = {"name": f"{prefix}{self.tag}-top-{i}", "cluster_id": cluster, "image_path": "registry.example.com/b:1",
                    "ram_required": request.get("ram", 1), "cpu_required": request.get("cpu", 1),
                    "gpu_required": request.get("gpu", 0), "priority": request.get("priority", 0)}
            self.api("POST", "/deployments/create/", body)
        return time.time() - started, failures

    # --- rows ----------------------------------------------------------------------------------------------------

    def read_rows(self):
        cluster = self.cluster("read", 1000, 100, 10)
        url = self.stack.url(f"/clusters/get_cluster/?id={cluster}")
        wrk(url, 3, self.c, self.auth)
        result = wrk(url, self.d, self.c, self.auth)
        targets = {"rps": 10_000, "p99": 10, "no_errors": True, "ratio": 0.07}
        return [Row("1. GET /clusters/get_cluster/?id=N (bearer)", result, self.c, targets)]

    def login_rows(self, connections=4, runs=20):
        env = {"BENCH_USERNAME": self.username, "BENCH_PASSWORD": self.password}
        result = wrk(self.stack.url("/"), self.d, connections, (), "login.lua", 2, env)
        salt_password = self.password.encode()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            hashlib.scrypt(salt_password, salt=os.urandom(16), n=2**15, r=8, p=3, maxmem=64 << 20, dklen=32)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        hash_row = {"rps": None, "p50": samples[len(samples) // 2], "p99": samples[-1], "non2xx": 0, "total": runs}
        self.notes.append(
            f"2. login p50 {result['p50']:.0f} ms with {connections} connections on {os.cpu_count()} cores vs. the scrypt"
            f" hash alone p50 {hash_row['p50']:.0f} ms (Python hashlib.scrypt = OpenSSL EVP_PBE_scrypt, N=2^15 r=8 p=3,"
            f" {runs} runs, one at a time, p99 column = max); {result['total']} logins in {self.d} s."
        )
        return [
            Row("2. POST /users/login/ (scrypt N=2^15 r=8 p=3)", result, connections, {"no_errors": True}),
            Row(f"2. scrypt hash alone, same parameters ({runs} runs)", hash_row, 1),
        ]

    def create_rows(self):
        """Creates that fit, into one cluster (every change serialized by its lock), then the same spread over ten
        clusters, each with where the machine's CPU went (`cpu_profile`): the gap between the two is what the
        serialization itself costs, as opposed to the work."""
        def run(clusters, prefix):
            self.create_wrk(3, self.c, self.create_env(clusters, prefix + "warm"))
            return cpu_profile(lambda: self.create_wrk(self.d, self.c, self.create_env(clusters, prefix)), self.stack)

        cluster = self.cluster("fits", 10**12, 10**9, 10**6)
        result, profile = run([cluster], "fit")
        counts = self.counts(cluster)
        self.notes.append(
            f"3. one cluster of huge capacity: {counts['Running'][0]:,} Running, {counts['Pending'][0]} Pending after"
            f" the warm-up and the run (every create started)."
        )
        result10, profile10 = run([self.cluster(f"fits{i}", 10**12, 10**9, 10**6) for i in range(10)], "fit10")
        return [
            Row("3. create that fits (one cluster)", result, self.c, {"rps": 2_500, "p99": 25, "no_errors": True},
                note=profile),
            Row("3. create that fits, over 10 clusters (for comparison)", result10, self.c, {"no_errors": True},
                note=profile10),
        ]

    def queue_rows(self, running=1000, shallow=100):
        """Two clusters of the same shape, one with `deep` pending deployments and one with `shallow`.

        Capacity: `running` slots of (1 GiB-ish RAM unit, 1 CPU), filled by `running` small Running deployments at
        priority 1. The filler queue is big deployments (the whole cluster, priority 0) that never fit while anything
        runs, so they sit at the back of the queue. Then, per cluster:
        (a) creates of a small deployment at priority 1: the cluster is full and equal priority never preempts, so
            each queues (behind its priority, ahead of the filler);
        (b) creates of a small deployment at a priority above every running one (each create outranks the previous
            ones): each evicts exactly one running deployment, the lowest-priority one, back to pending;
        (c) completions of Running deployments: each frees one slot, which admits the head of the queue (the
            highest-priority small pending deployment). The ids are the running set followed by the small pending
            ones in scheduling order, i.e. the order in which they will be admitted, driven by one wrk thread.
        """
        shapes = {}
        for label, filler in (("deep", self.pending), ("shallow", shallow)):
            cluster = self.cluster(f"queue-{label}", running, running, 1)
            elapsed_running, fail_running = self.seed(cluster, running, f"run{label}", ram=1, cpu=1, priority=1)
            elapsed, failures = self.seed(cluster, filler, f"big{label}", ram=running, cpu=running, gpu=1, priority=0)
            counts = self.counts(cluster)
            self.notes.append(
                f"4. seeding cluster {cluster} through the API: {running:,} running in {elapsed_running:.1f} s, then"
                f" {filler:,} pending in {elapsed:.1f} s ({filler / elapsed:,.0f}/s); non-2xx {fail_running + failures};"
                f" now {counts['Running'][0]:,} Running, {counts['Pending'][0]:,} Pending."
            )
            if counts["Running"][0] != running or counts["Pending"][0] != filler:
                self.notes.append("4. WARNING: the seeded counts are not what was asked for")
            shapes[label] = cluster
        # Seeding wrote ~200 MB of WAL and 200,000 rows: let the checkpoint it triggered and autovacuum's pass finish
        # now rather than during the first measured row, so that the rows compare depth and nothing else.
        self.stack.psql("CHECKPOINT")
        self.stack.psql("VACUUM ANALYZE")
        self.notes.append("4. after seeding: CHECKPOINT and VACUUM ANALYZE, so the seeding's checkpoint and autovacuum"
                          " work does not land in the first measured row.")
        rows = []

        def measure(kind, label, run):
            cluster = shapes[label]
            before = self.counts(cluster)
            result, profile = cpu_profile(lambda: run(cluster), self.stack)
            after = self.counts(cluster)
            delta = {k: after[k][0] - before[k][0] for k in after}
            preempted = sum(v[1] for v in after.values()) - sum(v[1] for v in before.values())
            ok = result["total"] - result["non2xx"]
            self.notes.append(
                f"4{kind} {label} ({before['Pending'][0]:,} pending before): {ok:,} 2xx; Running"
                f" {before['Running'][0]:,}→{after['Running'][0]:,}, Pending {before['Pending'][0]:,}→"
                f"{after['Pending'][0]:,} ({delta['Pending']:+,}), Completed {delta['Completed']:+,}, preemptions"
                f" {preempted:+,}."
            )
            return result, profile, before, after

        # (a) creates that queue
        for label in ("deep", "shallow"):
            result, profile, before, after = measure("a", label, lambda c: self.create_wrk(
                self.d, self.c, self.create_env([c], f"q{label}", ram=1, cpu=1, priority=1)))
            ok = result["total"] - result["non2xx"]
            sample = self.stack.psql(f"SELECT id FROM deployments WHERE cluster_id = {shapes[label]} AND name ="
                                     f" 'q{label}{self.tag}-0-1'")
            sampled = self.status_of(sample[0][0]) if sample else "missing"
            verdict = "as intended" if self.within(after["Pending"][0] - before["Pending"][0], ok) and sampled == "Pending" \
                and after["Running"][0] == before["Running"][0] else "NOT as intended"
            self.notes.append(f"4a {label}: every create queued? {verdict} (sample GET: {sampled}).")
            rows.append((f"4a. create that queues, {before['Pending'][0]:,} pending", label, result, profile))
        # (b) creates that preempt: priorities 2, 3, 4, ... interleaved over the two wrk threads
        for label in ("deep", "shallow"):
            result, profile, before, after = measure("b", label, lambda c: self.create_wrk(
                self.d, self.c, self.create_env([c], f"p{label}", ram=1, cpu=1, priority=2, step=1)))
            ok = result["total"] - result["non2xx"]
            preempted = sum(v[1] for v in after.values()) - sum(v[1] for v in before.values())
            newest = self.stack.psql(f"SELECT id FROM deployments WHERE cluster_id = {shapes[label]} AND name LIKE"
                                     f" 'p{label}{self.tag}-%' ORDER BY priority DESC LIMIT 1")
            sampled = self.status_of(newest[0][0]) if newest else "missing"
            verdict = "as intended" if self.within(preempted, ok) and after["Running"][0] == before["Running"][0] \
                and sampled == "Running" else "NOT as intended"
            self.notes.append(f"4b {label}: every create preempted exactly one? {verdict} ({preempted:,} preemptions"
                              f" for {ok:,} creates; newest create: {sampled}).")
            rows.append((f"4b. create that preempts, {before['Pending'][0]:,} pending", label, result, profile))
        # (c) completions that admit the head of the queue
        for label in ("deep", "shallow"):
            cluster = shapes[label]
            ids = [r[0] for r in self.stack.psql(
                f"SELECT id FROM deployments WHERE cluster_id = {cluster} AND status = 'Running' ORDER BY id")]
            ids += [r[0] for r in self.stack.psql(
                f"SELECT id FROM deployments WHERE cluster_id = {cluster} AND status = 'Pending' AND ram_required = 1"
                " ORDER BY priority DESC, seq")]
            with tempfile.NamedTemporaryFile("w", prefix="hvb-ids-", suffix=".txt", delete=False) as file:
                file.write("\n".join(ids) + "\n")
            try:
                result, profile, before, after = measure("c", label, lambda c: wrk(
                    self.stack.url("/"), self.d, self.c, self.auth, "complete.lua", 1, {"BENCH_IDS": file.name}))
            finally:
                os.unlink(file.name)
            ok = result["total"] - result["non2xx"]
            admitted = before["Pending"][0] - after["Pending"][0]
            head = ids[running]  # the first pending one in scheduling order
            sampled = self.status_of(head)
            verdict = "as intended" if self.within(admitted, ok) and after["Running"][0] == before["Running"][0] \
                and sampled in ("Running", "Completed") else "NOT as intended"
            self.notes.append(f"4c {label}: every completion admitted one pending? {verdict} ({admitted:,} admitted"
                              f" for {ok:,} completions; {len(ids) - running:,} small pending were available; queue"
                              f" head before the run is now {sampled}).")
            rows.append((f"4c. completion that admits, {before['Pending'][0]:,} pending", label, result, profile))
        # (v1) reads that must not depend on depth either: the last deployment of the queue (its position is a rank
        # in the snapshot), the cluster (its counts are the snapshot's set sizes) and the queue's first page.
        for label in ("deep", "shallow"):
            cluster = shapes[label]
            pending = self.counts(cluster)["Pending"][0]
            last = self.stack.psql(f"SELECT id FROM deployments WHERE cluster_id = {cluster} AND status = 'Pending'"
                                   " ORDER BY priority, seq DESC LIMIT 1")[0][0]
            position = self.api("GET", f"/v1/deployments/{last}")["queue_position"]
            self.notes.append(f"6 {label}: the last pending deployment ({last}) reads queue_position {position:,} of"
                              f" {pending:,} pending.")
            for name, path in ((f"6a. GET /v1/deployments/{{id}}, last of {pending:,} pending", f"/v1/deployments/{last}"),
                               (f"6b. GET /v1/clusters/{{id}}, {pending:,} pending", f"/v1/clusters/{cluster}"),
                               (f"6c. GET /v1/clusters/{{id}}/queue, {pending:,} pending", f"/v1/clusters/{cluster}/queue")):
                url = self.stack.url(path)
                wrk(url, 3, self.c, self.auth)
                rows.append((name, label, wrk(url, self.d, self.c, self.auth), ""))
        out = []
        for name, label, result, profile in rows:
            targets = {"p99": 25, "no_errors": True}
            row = Row(name, result, self.c, targets, note=profile)
            if label == "deep":
                row.baseline_of = name[:3]
            else:
                row.baseline_key = name[:3]
            out.append(row)
        # Put each deep row next to its shallow one.
        out.sort(key=lambda row: (row.name[:3], 0 if hasattr(row, "baseline_of") else 1))
        # (v1 lists) a page of this tenant's deployments, and of a tenant with none beside all of them: each walks
        # its own tenant's index.
        total = int(self.stack.psql("SELECT count(*) FROM deployments")[0][0])
        other = f"bench{self.tag}b"
        self.stack.request("POST", "/users/register/", {"username": other, "password": self.password})
        _, login = self.stack.request("POST", "/users/login/", {"username": other, "password": self.password})
        other_auth = ("Authorization: Bearer " + login["access_token"],)
        shallow = self.counts(shapes["shallow"])
        pages = (
            (f"6d. GET /v1/deployments?limit=100, a tenant of {total:,} deployments", "", self.auth),
            ("6d. the same for a tenant with none beside them", "", other_auth),
            # Filters that drop most of the tenant's rows: each walks its own index, not the tenant's id order.
            (f"6e. the same, ?cluster_id= of {sum(n for n, _ in shallow.values()):,} of them (the shallow cluster)",
             f"&cluster_id={shapes['shallow']}", self.auth),
            (f"6e. the same, ?status=Completed ({sum(self.counts(c)['Completed'][0] for c in shapes.values()):,} of"
             " them)", "&status=Completed", self.auth),
        )
        for name, filters, auth in pages:
            url = self.stack.url("/v1/deployments?limit=100" + filters)
            wrk(url, 3, self.c, auth)
            out.append(Row(name, wrk(url, self.d, self.c, auth), self.c, {"p99": 25, "no_errors": True}))
        return out

    def mixed_rows(self, clusters=10):
        ids = [self.cluster(f"mixed{i}", 10**12, 10**9, 10**6) for i in range(clusters)]
        before = {c: self.counts(c) for c in ids}
        env = {"BENCH_CLUSTERS": ",".join(map(str, ids)), "BENCH_PREFIX": f"m{self.tag}", "BENCH_BACKLOG": "32"}
        result, profile = cpu_profile(
            lambda: wrk(self.stack.url("/"), self.d, self.c, self.auth, "mixed.lua", 2, env), self.stack)
        after = {c: self.counts(c) for c in ids}
        created = sum(sum(v[0] for v in after[c].values()) - sum(v[0] for v in before[c].values()) for c in ids)
        completed = sum(after[c]["Completed"][0] - before[c]["Completed"][0] for c in ids)
        self.notes.append(
            f"5. {clusters} clusters: {created:,} creates (all start) and {completed:,} completions in {self.d} s ="
            f" {(created + completed) / self.d:,.0f} changes/s; per cluster creates"
            f" {min(sum(v[0] for v in after[c].values()) for c in ids):,}–{max(sum(v[0] for v in after[c].values()) for c in ids):,}."
        )
        return [Row(f"5. mixed create + complete over {clusters} clusters", result, self.c,
                    {"rps": 4_000, "no_errors": True}, note=profile)]

    def accounting_check(self):
        """Every cluster's available = total − Σ Running requests (the scheduler's invariant), after all the load."""
        bad = self.stack.psql(
            "SELECT c.id FROM clusters c LEFT JOIN deployments d ON d.cluster_id = c.id AND d.status = 'Running'"
            " GROUP BY c.id HAVING c.available_ram <> c.total_ram - coalesce(sum(d.ram_required), 0)"
            " OR c.available_cpu <> c.total_cpu - coalesce(sum(d.cpu_required), 0)"
            " OR c.available_gpu <> c.total_gpu - coalesce(sum(d.gpu_required), 0)"
        )
        self.notes.append("accounting: " + ("every cluster's available = total − Σ Running" if not bad else
                                            f"MISMATCH in clusters {[b[0] for b in bad]}"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--memory-requests", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups: " + ", ".join(GROUPS))
    parser.add_argument("--pending", type=int, default=100_000, help="pending deployments in the deep cluster")
    parser.add_argument("--pg-stats", action="store_true", help="enable pg_stat_statements and print the top queries")
    parser.add_argument("--log-level", default="warning", help="hypervisord's HV_LOG_LEVEL (info logs phase timings)")
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) still stops the private stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = set(args.only.split(","))
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}")
    for path in [BINARY] + ([SCHEDULER_BENCHMARK] if "scheduler" in only else []):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is missing: build first (swift build -c release), or set HV_BENCH_BINARY")

    # Recycling is off so that the memory check watches the same processes over the whole run.
    stack = Stack({"HV_MAX_REQUESTS": "0"}, args.pg_stats,
                  args.log_level)
    rows = []
    started = time.time()
    try:
        stack.start()
        c, d = args.connections, args.duration
        bench = Bench(stack, d, c, args.pending)
        wrk(stack.url("/__static"), 3, c)  # warm-up
        ceiling = wrk(stack.url("/__static"), d, c)
        rows.append(Row("nginx static (ceiling)", ceiling, c))
        if "base" in only:
            wrk(stack.url("/"), 3, c)
            rows.append(Row("GET /", wrk(stack.url("/"), d, c), c))
            rows.append(Row("GET /readyz", wrk(stack.url("/readyz"), d, c), c))
        if only & {"read", "login", "create", "queue", "mixed"}:
            bench.setup_account()
        for group, method in (("read", bench.read_rows), ("login", bench.login_rows), ("create", bench.create_rows),
                              ("queue", bench.queue_rows), ("mixed", bench.mixed_rows)):
            if group in only:
                group_started = time.time()
                rows += method()
                print(f"[{group}: {time.time() - group_started:.0f} s]", file=sys.stderr, flush=True)
        if only & {"create", "queue", "mixed"}:
            bench.accounting_check()

        print_table(rows, ceiling, c, d, workers=len(stack.worker_rss_kib()))
        if len(bench.notes) > 1:
            print("\nwhat happened:\n")
            for note in bench.notes:
                print("- " + note)
        if args.pg_stats:
            pg_statements(stack)
        if "scheduler" in only:
            print("\nscheduler micro-benchmarks (Sources/Domain, no I/O; bench/SchedulerBenchmark):\n")
            sys.stdout.flush()
            subprocess.check_call([SCHEDULER_BENCHMARK])
        if "memory" in only:
            memory(stack, args.memory_requests, c)
        print(f"\n(total {time.time() - started:.0f} s)")
    finally:
        stack.stop()


def print_table(rows, ceiling, connections, duration, workers):
    setting = "HV_WORKERS" if os.environ.get("HV_WORKERS") else "the pool's default"
    print(f"\nwrk through nginx, {duration} s per row, {os.cpu_count()} cores, {workers} workers ({setting})\n")
    print("| benchmark | conns | req/s | × ceiling | p50 ms | p99 ms | non-2xx | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    baselines = {row.baseline_key: row.result for row in rows if hasattr(row, "baseline_key")}
    for row in rows:
        r = row.result
        baseline = baselines.get(getattr(row, "baseline_of", None))
        verdict = check(row, ceiling, baseline) if r["rps"] is not None else ""
        if baseline is not None:
            verdict += f" ({r['rps'] / baseline['rps']:.2f}× the 100-pending row)"
        if row.note:
            verdict = f"{verdict}; {row.note}" if verdict else row.note
        rps = "—" if r["rps"] is None else f"{r['rps']:,.0f}"
        ratio = "—" if r["rps"] is None else f"{r['rps'] / ceiling['rps']:.3f}"
        print(f"| {row.name} | {row.connections} | {rps} | {ratio} | {r['p50']:.2f} | {r['p99']:.2f} |"
              f" {r['non2xx']} | {verdict} |")
    sys.stdout.flush()


def pg_statements(stack, limit=12):
    rows = stack.psql(
        "SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3),"
        " round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1), plans,"
        " round(mean_plan_time::numeric, 3), regexp_replace(left(query, 110), '\\s+', ' ', 'g')"
        f" FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT {limit}"
    )
    print("\npg_stat_statements, top by total time (plans: how often a statement was planned, not run from a cached"
          " generic plan):\n")
    print("| calls | total ms | mean ms | % | plans | mean plan ms | query |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for calls, total, mean, share, plans, plan_ms, query in rows:
        print(f"| {int(calls):,} | {int(float(total)):,} | {mean} | {share} | {int(plans):,} | {plan_ms} |"
              f" `{query.replace('|', '/')}` |")
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
