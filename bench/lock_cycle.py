#!/usr/bin/env python3
"""What one cluster's lock cycle costs PostgreSQL besides its changes: pgbench runs the worker's create-that-fits
transaction into one cluster, as one pipeline the way the worker sends it (`BEGIN`, the lock, `createIfFits`, `COMMIT`,
the flush statement), with k creates per transaction instead of one, and prints creates/s and the machine's CPU per
create for each k.

    bench/lock_cycle.py [K ...]     (after `swift build -c release`; default K: 1 2 4 8)

The statements are the service's own, read from PostgreSQL's log of one create through the API. Three runs here
(2026-12-06): k = 1 2,357–3,359 creates/s at 403–563 µs each, k = 4 3,662–4,920/s at 241–328 µs, k = 8
4,499–6,545/s at 171–254 µs: a lock cycle costs 170–230 µs besides its creates (docs/decisions.md, "More changes per
lock cycle").
"""
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("benchrun", os.path.join(ROOT, "bench", "run.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)


def statements(stack, names):
    """The service's statements `names` as pgbench script text, from PostgreSQL's log of their first execution
    (`log_min_duration_statement = 0` meanwhile): their parameters become pgbench variables (`:p1`…), set per
    transaction, with the types the worker's statements have (pgbench leaves them to PostgreSQL, which does not infer
    them all)."""
    texts = {}
    with open(os.path.join(stack.state, "log", "postgres.log")) as log:
        lines = log.read().splitlines()
    for index, line in enumerate(lines):
        for name in names:
            marker = f" execute {name}: "
            if marker in line and name not in texts:
                text = [line.split(marker, 1)[1]]
                for following in lines[index + 1:]:
                    if re.match(r"\d{4}-\d\d-\d\d ", following):
                        break
                    text.append(following)
                texts[name] = " ".join(" ".join(text).split())
    for name in names:
        if name not in texts:
            raise SystemExit(f"{name} was not logged")
        for number, kind in ((9, "integer"), (8, "bigint"), (7, "bigint"), (6, "bigint"), (3, "bigint"),
                             (2, "bigint"), (1, "bigint")):
            texts[name] = texts[name].replace(f"${number}", f"(:p{number})::{kind}")
        texts[name] += ";"
    return [texts[name] for name in names]


def busy_seconds():
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return sum(fields) / hz, (sum(fields) - fields[3] - fields[4]) / hz


def main():
    ks = [int(k) for k in sys.argv[1:]] or [1, 2, 4, 8]
    stack = m.Stack({"HV_MAX_REQUESTS": "0"})
    try:
        stack.start()
        bench = m.Bench(stack, 10, 8, 0)
        bench.setup_account()
        cluster = bench.cluster("cycle", 10**12, 10**9, 10**6)
        stack.psql("ALTER SYSTEM SET log_min_duration_statement = 0", database="postgres")
        stack.psql("SELECT pg_reload_conf()", database="postgres")
        first = {"cluster_id": cluster, "name": "first", "image_path": "app", "ram_required": 1, "cpu_required": 1,
                 "gpu_required": 0, "priority": 0}
        bench.api("POST", "/deployments/create/", first)
        user = stack.psql(f"SELECT id FROM users WHERE username = '{bench.username}'")[0][0]
        issued = stack.psql(f"SELECT tokens_valid_after FROM users WHERE id = {user}")[0][0]
        stack.psql("ALTER SYSTEM RESET log_min_duration_statement", database="postgres")
        stack.psql("SELECT pg_reload_conf()", database="postgres")
        lock, create, durable = statements(stack, ["sched_lock", "sched_create_if_fits", "sched_durable"])
        for k in ks:
            # Names unique with overwhelming likelihood; the image path is a constant.
            lines = [f"\\set p1 {user}", f"\\set p2 {issued}", f"\\set p3 {cluster}", "\\set p6 1", "\\set p7 1000",
                     "\\set p8 0", "\\set p9 0"] + [f"\\set n{j} random(1, 1000000000000000)" for j in range(k)]
            lines += ["\\startpipeline", "BEGIN;", lock.replace(":p1", ":p3")]
            lines += [create.replace("$4", f"'bench' || :n{j}").replace("$5", "'app'") for j in range(k)]
            lines += ["COMMIT;", durable, "\\endpipeline"]
            with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
                script.write("\n".join(lines) + "\n")
            try:
                total0, busy0 = busy_seconds()
                output = subprocess.check_output(
                    ["pgbench", "-n", "-M", "prepared", "-c", "8", "-j", "2", "-T", "10", "-f", script.name,
                     "-h", os.path.join(stack.state, "run"), "-U", "postgres", "hypervisor"], text=True)
                total1, busy1 = busy_seconds()
            finally:
                os.unlink(script.name)
            tps = float(next(line for line in output.splitlines() if line.startswith("tps")).split()[2])
            creates = tps * k * 10
            print(f"k = {k}: {tps * k:,.0f} creates/s, {(busy1 - busy0) * 1e6 / creates:,.0f} µs of machine CPU per"
                  f" create, the CPU {(busy1 - busy0) / (total1 - total0):.0%} busy")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
