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

MARKET_SYMBOLS = ("BTCUSDT", "ETHUSDT")
EVEN_BETS = "labels:\n  profit_threshold: 0.01\n  stop_threshold: 0.01\n"   # even barriers: confident models, more signals

@pytest.fixture(scope="session")
def trained_market(tmp_path_factory):
    """A running `futbot sim` (fast clock, 2 months, default alpha), both symbols' history stored (1m to 1d, and the
    default extras: funding, open interest, 5m mark and index), and
    a LightGBM pair per symbol from `futbot train` (no tuning, even bets) approved into production: (folder, url, models)"""
    from futbot import history as h
    d = tmp_path_factory.mktemp("market")
    run = lambda *a: subprocess.run([str(BIN / "futbot"), *a], capture_output=True, text=True)
    with run_sim("--alpha", "default", months=2, seed=4, speed=1200) as url:
        for s in MARKET_SYMBOLS:
            h.download(s, h.DEFAULT_DATASETS, ["1m", "5m", "1h", "4h", "1d"], price_interval="5m", months=2, exchange=url,
                       data_dir=d / "data", progress=False)
        # the whole feature table but the flow windows (the default pool): the service tests serve every timeframe and the
        # extras live, and watch the drift of price and volume levels, which the flow windows are normalised against
        (d / "cfg.yaml").write_text('training:\n  walk_forward_folds: 3\n  max_features: 30\n  features: ["*", "!flow_*_1m", "!px_age_*_1m"]\n' + EVEN_BETS)
        models = {}
        for s in MARKET_SYMBOLS:
            r = run("train", "--symbol", s, "--models", "lgbm", "--n-trials", "0", "--data-dir", str(d / "data"),
                    "--artifacts-dir", str(d / "art"), "--config", str(d / "cfg.yaml"), "--seed", "1")
            assert r.returncode in (0, 1), r.stderr[-2000:]
            r = run("registry", "approve", f"lgbm-{s}", "1.0.0", "--reason", "test: serve the candidate",
                    "--artifacts-dir", str(d / "art"))
            assert r.returncode == 0 or "already" in r.stdout + r.stderr, r.stdout + r.stderr
            models[s] = d / "art" / "models" / f"lgbm-{s}" / "1.0.0"
        yield d, url, models

def wait_until(what, timeout_s:float, every_s:float=0.5):
    "The first truthy what(), or an AssertionError after timeout_s"
    import time
    end = time.time() + timeout_s
    while time.time() < end:
        if v := what(): return v
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s")

def confident_threshold(d, models, lo, hi, q):
    "A min_confidence the models reach on a share 1 - q of the decision rows in [lo, hi) (at least 0.5)"
    from futbot.config import load_config
    from futbot.intervals import index_ms
    from futbot.live import LiveModel, batch_proba, load_feed
    cf, tops = load_config(d / "cfg.yaml"), []
    for s, f in models.items():
        P = batch_proba(load_feed(s, d / "data", cf, lo, hi), LiveModel.load(f))
        tops.append(P[(index_ms(P.index) >= lo) & (index_ms(P.index) < hi)].max(axis=1).quantile(q))
    return max(0.5, min(tops) - 1e-9)

def debian_server(binary:str, package:str)->str:
    "A Debian server binary, installed with apt-get where it is missing (CI runs as root)"
    import shutil
    if not shutil.which(binary):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
            assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}"
    assert shutil.which(binary), f"no {binary} after apt-get install {package}"
    return shutil.which(binary)

@contextlib.contextmanager
def prometheus_scraping(target:str, every_s:float=1.0):
    "Our own Prometheus (temporary config, data and port; never a system one) scraping host:port `target`; yields its URL"
    import shutil, tempfile
    binary = debian_server("prometheus", "prometheus")
    home = Path(tempfile.mkdtemp(prefix="futbot-prom-"))
    (home / "prometheus.yml").write_text(f"global:\n  scrape_interval: {every_s:g}s\nscrape_configs:\n  - job_name: futbot\n"
                                         f"    scrape_interval: {every_s:g}s\n    scrape_timeout: {every_s:g}s\n"
                                         f"    static_configs:\n      - targets: [\"{target}\"]\n")
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", open(home / "prometheus.log", "wb")
    p = subprocess.Popen([binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            assert p.poll() is None, (home / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            time.sleep(0.25)
        else: raise AssertionError(f"prometheus not ready: {(home / 'prometheus.log').read_text()[-2000:]}")
        yield url
    finally:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)

def prometheus_query(url:str, q:str)->list:
    "The result vector of an instant query through Prometheus's HTTP API"
    import urllib.parse
    with urllib.request.urlopen(url + "/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=10) as r:
        d = json.loads(r.read())
    assert d["status"] == "success", d
    return d["data"]["result"]

REDIS_START_S = 20                             # longest wait for redis-server to answer

def redis_bin()->str:
    "Debian's redis-server, installed with apt-get where missing"
    return debian_server("redis-server", "redis-server")

def free_port()->int:
    "A TCP port free on 127.0.0.1 now"
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

class RedisServer:
    "A redis-server of our own on 127.0.0.1: append-only file fsynced on every write, no RDB snapshots"
    def __init__(self, exe:str, home:Path):
        self.exe, self.home, self.port, self.proc = exe, home, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        cmd = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.home), "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
               "--logfile", str(self.home / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import redis
        client, until = redis.Redis(port=self.port, socket_timeout=1), time.monotonic() + REDIS_START_S
        while True:
            try:
                if client.ping(): break
            except redis.RedisError:   # not listening yet, or still loading the append-only file
                assert self.proc.poll() is None, f"redis-server exited: {self.log()}"
                assert time.monotonic() < until, f"redis-server did not answer in {REDIS_START_S} s: {self.log()}"
                time.sleep(0.05)
        client.close()

    def stop(self, kill:bool=False):
        "SIGTERM (Redis shuts down cleanly), or SIGKILL (a crash)"
        if self.proc is None: return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self)->str:
        f = self.home / "redis.log"
        return f.read_text()[-2000:] if f.exists() else ""

@pytest.fixture(scope="module")
def redis_server():
    "A redis-server of the module's own (Debian's, installed where missing); a test that stops it starts it again"
    import shutil, tempfile
    home = Path(tempfile.mkdtemp(prefix="futbot-redis-"))
    srv = RedisServer(redis_bin(), home)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)

@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Selenium (Debian's chromium and chromium-driver, installed where missing), 1280x800,
    keeping the browser console's log (driver.get_log("browser"))"""
    import shutil
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    binary = debian_server("chromium", "chromium")
    driver_bin = debian_server("chromedriver", "chromium-driver")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800",
              f"--user-data-dir={tempfile_dir('futbot-chromium-')}"):
        opts.add_argument(a)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=ChromeService(driver_bin), options=opts)
    try: yield d
    finally: d.quit()

def tempfile_dir(prefix:str)->str:
    "A new temporary folder"
    import tempfile
    return tempfile.mkdtemp(prefix=prefix)
