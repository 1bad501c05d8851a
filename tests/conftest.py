import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

@pytest.fixture
def futbot_cmd():
    "The installed console script, as CI and users run it"
    exe = BIN / "futbot"
    assert exe.exists(), f"{exe} missing: run make test (it installs the package)"
    return str(exe)

import json, signal, subprocess, time, urllib.request, contextlib

@contextlib.contextmanager
def run_sim(*args, months=2, start="2024-01-01", seed=7, speed=60):
    "A real `futbot sim` process on a free port; yields its base URL and stops it with SIGTERM"
    cmd = [str(BIN / "futbot"), "sim", "--port", "0", "--months", str(months), "--start", start, "--seed", str(seed),
           "--speed", str(speed), *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("http://"), f"sim did not start: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
        yield line
    finally:
        p.send_signal(signal.SIGTERM)
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill(); p.wait()

@pytest.fixture(scope="session")
def sim_url():
    "One shared local exchange for the tests that only read from it (2 months from 2024-01-01, seed 7)"
    with run_sim() as url: yield url

def sim_post(url, path, obj):
    "POST JSON to the sim's admin API"
    req = urllib.request.Request(url + path, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r: return json.loads(r.read())

def http_json(url):
    "GET JSON with a plain HTTP client (independent of python-binance)"
    with urllib.request.urlopen(url, timeout=30) as r: return json.loads(r.read()), dict(r.headers)
