#!/usr/bin/env python3
"""Why nginx/ uses a FastCGI connection per request: the same pool measured with plain `fastcgi_pass` and with
upstream keepalive + `fastcgi_keep_conn on`, then a graceful stop (SIGQUIT) timed.

    bench/keep_conn.py     (after `swift build -c release`)

Measured here (2 cores, 64 connections, 10 s, GET /): plain 21.9k req/s p99 7.1 ms; kept connections 28.4k req/s but
p99 1,960 ms (requests queued on connections pinned to busy workers starve), and a graceful stop then waited the full
HV_REQUEST_TIMEOUT (30 s) for workers pinned to idle kept connections.
"""
import os, re, subprocess, sys, time
import importlib.util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
spec = importlib.util.spec_from_file_location("benchrun", os.path.join(ROOT, "bench", "run.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
stack = m.Stack({"HV_WORKERS": "8", "HV_MAX_REQUESTS": "0"}, pg_stats=False, log_level="warning")
stack.start()
try:
    print("plain fastcgi_pass:", m.wrk(stack.url("/"), 10, 64))
    conf = os.path.join(stack.state, "nginx", "nginx.conf")
    text = open(conf).read()
    text = re.sub(r"(upstream hypervisor \{\s*server [^;]+;)", r"\1\n        keepalive 16;", text)
    text = text.replace("location / {", "location / {\n            fastcgi_keep_conn on;")
    open(conf, "w").write(text)
    subprocess.check_call(["nginx", "-t", "-q", "-c", conf, "-p", os.path.join(stack.state, "nginx") + "/", "-e", os.path.join(stack.state, "log", "nginx-error.log")])
    pid = open(os.path.join(stack.state, "run", "nginx.pid")).read().strip()
    os.kill(int(pid), 1); time.sleep(2)
    print("keepalive 16 + fastcgi_keep_conn on:", m.wrk(stack.url("/"), 10, 64))
    t = time.time(); stack.master.send_signal(3)
    try:
        stack.master.wait(timeout=40); print(f"graceful stop (SIGQUIT) took {time.time()-t:.1f} s")
    except Exception:
        print("graceful stop (SIGQUIT) did not finish in 40 s")
    stack.master = None
finally:
    stack.stop()
