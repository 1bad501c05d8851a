"""`futbot report`: the static site of a real artifacts folder (trained models and runs, a backtest with its report),
every local link and image resolving inside the site, nothing loaded from another host, opened in headless Chromium."""
import functools, hashlib, http.server, json, os, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
import numpy as np
import pandas as pd
import pytest
from futbot.dataset import store_bars
from futbot.features import synth_bars

ROOT = Path(__file__).resolve().parents[1]
FUTBOT = str(Path(sys.executable).parent / "futbot")
REPORT_SUFFIXES = (".html", ".pdf", ".md", ".png", ".svg", ".jpg", ".jpeg", ".ipynb")
SHOTS = ROOT / "artifacts" / "screenshots"      # kept for the closing note (artifacts/ is git-ignored)

def run(*args, cwd):
    env = {**os.environ, "FUTBOT_HOME": str(ROOT), "FUTBOT_LOG_DIR": str(Path(cwd) / "logs"),
           "FUTBOT_LOG_FORMAT": "json"}
    return subprocess.run([FUTBOT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

@pytest.fixture(scope="module")
def built(trained_market, tmp_path_factory):
    """A site built by `futbot report` from: the shared trained market's models and training runs (linked in), a real
    backtest with its HTML/PDF report and executed notebook, and one unreadable notebook; (site, art, result)"""
    d, _, _ = trained_market
    tmp = tmp_path_factory.mktemp("report")
    art = tmp / "art"
    art.mkdir()
    for sub in ("train", "models", "mlflow.db"): (art / sub).symlink_to(d / "art" / sub)   # read, never written
    (art / "backtests").mkdir()
    for run_dir in (d / "art" / "backtests").iterdir(): (art / "backtests" / run_dir.name).symlink_to(run_dir)
    store_bars(synth_bars(60 * 24 * 16, seed=3, vol=0.0012, start="2024-03-01"), "BTCUSDT", "1m", tmp / "data")
    t = pd.date_range("2024-03-05 00:05", "2024-03-12", freq="5min", tz="UTC")
    u = np.random.default_rng(0).random(len(t))
    pd.DataFrame({"p_long": u, "p_short": 1 - u}, index=t).to_parquet(tmp / "p.parquet")
    r = run("backtest", "--symbol", "BTCUSDT", "--proba", str(tmp / "p.parquet"), "--start", "2024-03-05",
            "--end", "2024-03-12", "--data-dir", str(tmp / "data"), "--artifacts-dir", str(art),
            "--run-id", "bt-report", cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    (art / "drift" / "broken").mkdir(parents=True)
    (art / "drift" / "broken" / "drift_report.ipynb").write_text("{cut short")       # a killed run's notebook
    r = run("report", "--artifacts-dir", str(art), "--data-dir", str(d / "data"), "--out", str(tmp / "_site"), cwd=tmp)
    return tmp / "_site", art, r

class Refs(HTMLParser):
    "Every (tag, attribute, value) of href and src attributes, and the scripts, of one page"
    def __init__(self):
        super().__init__()
        self.refs, self.scripts = [], 0
    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.refs += [(tag, a, v) for a, v in attrs if a in ("href", "src") and v is not None]

def parse(p:Path)->Refs:
    h = Refs()
    h.feed(p.read_text(encoding="utf-8"))
    return h

def is_local(v:str)->bool: return not urlsplit(v).scheme and not v.startswith("//")

def target(site:Path, page:Path, v:str)->Path:
    t = (page.parent / unquote(urlsplit(v).path)).resolve() if urlsplit(v).path else page
    return t / "index.html" if t.is_dir() else t

def test_report_builds_with_one_line_per_section(built):
    site, _, r = built
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(site / "index.html")
    lines = [json.loads(l) for l in r.stderr.splitlines() if l.startswith("{")]
    assert "Traceback" not in r.stderr and len(lines) == len(r.stderr.strip().splitlines()), r.stderr[-2000:]
    sections = [l["section"] for l in lines if l["event"] == "section"]
    assert {"user docs", "API docs", "models and training runs", "backtests", "drift"} <= set(sections), sections
    skipped = [l for l in lines if l["event"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["file"].endswith("drift_report.ipynb") and skipped[0]["level"] == "WARNING"
    assert next(l for l in lines if l["event"] == "links")["unlinked"] == 0    # the sources' links all resolve

def test_every_local_link_resolves_and_nothing_is_remote(built):
    "Plain outbound links (<a href=https://...>) are allowed: they load nothing; every src and <link> is local"
    site, _, _ = built
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 40
    for p in pages:
        h = parse(p)
        assert h.scripts == 0, p
        for tag, attr, v in h.refs:
            if v.startswith(("#", "data:", "mailto:")): continue
            if not is_local(v):
                assert tag == "a" and attr == "href", (p, tag, v)
                continue
            t = target(site, p, v)
            assert t.is_file() and t.is_relative_to(site.resolve()), (p, v)

def reachable(site:Path)->set:
    "Every file of the site reached by following local links from the index"
    seen, todo = set(), [site / "index.html"]
    while todo:
        p = todo.pop()
        if p in seen: continue
        seen.add(p)
        if p.suffix == ".html":
            todo += [target(site, p, v) for _, _, v in parse(p).refs if is_local(v) and not v.startswith("#")]
    return seen

def test_index_links_every_report_grouped_newest_first(built):
    site, art, _ = built
    got, index = reachable(site), (site / "index.html").read_text()
    pages_of = {}                                          # notebook content -> its rendered pages (rendered once)
    for dirpath, dirs, files in os.walk(art, followlinks=True):
        dirs[:] = [x for x in dirs if x != "mlruns" and not x.startswith(".")]
        for f in files:
            src = Path(dirpath) / f
            rel = src.relative_to(art).as_posix()
            if not f.lower().endswith(REPORT_SUFFIXES) or rel.startswith("drift/broken"): continue
            page = site / "reports" / (rel + (".html" if f.endswith((".md", ".ipynb")) else ""))
            if f.endswith(".ipynb"): pages_of.setdefault(hashlib.sha256(src.read_bytes()).hexdigest(), []).append(page)
            else: assert page.resolve() in got, rel
    assert len(pages_of) >= 3                              # retrain runs (one per symbol) and the backtest report
    for h, pages in pages_of.items(): assert any(p.resolve() in got for p in pages), pages
    heads = [index.index(f'<h2 id="{g}">') for g in ("models", "backtests", "drift", "api", "docs")]
    assert heads == sorted(heads)
    shown = lambda f: f.name in ("summary.json", "metadata.json") or f.name.lower().endswith(REPORT_SUFFIXES)
    bts = sorted((p for p in (art / "backtests").iterdir() if (p / "summary.json").exists()),
                 key=lambda p: -max(f.stat().st_mtime for f in p.iterdir() if shown(f)))
    at = [index.index(f"reports/backtests/{p.name}/index.html") for p in bts]
    assert at == sorted(at)                                # newest first
    assert "reports/backtests/bt-report/report.html" in index and "Configuration reference" in index
    assert index.count(", production: test AUC") == 2          # the registry's alias, not the metadata's status
    conf = (site / "docs" / "configuration.html").read_text()
    assert "FUTBOT_RISK__MAX_LEVERAGE" in conf and "a leverage in [1, 125]" in conf

@pytest.fixture(scope="module")
def served(built):
    "The site on a local HTTP server, as a reader would open it"
    site = built[0]
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()

def test_pages_load_in_chromium(built, served, browser, tmp_path):
    site = built[0]
    pages = ["index.html", "docs/configuration.html", "docs/operations.html", "api/14_report.html",
             "reports/backtests/bt-report/index.html", "reports/backtests/bt-report/report.html",
             "reports/backtests/bt-report/report.ipynb.html",
             next(p for p in site.glob("reports/models/*/*/index.html")).relative_to(site).as_posix()]
    browser.get_log("browser")                             # drop what earlier tests left
    for rel in pages:
        browser.get(f"{served}/{rel}")
        assert browser.execute_script("return document.readyState") == "complete"
        bad = browser.execute_script("return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                                     ".map(i => i.src.slice(0, 80))")
        assert bad == [], (rel, bad)
        hosts = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(h.startswith((served, "data:")) for h in hosts), (rel, hosts)
        errors = [l for l in browser.get_log("browser") if l["level"] == "SEVERE"]
        assert errors == [], (rel, errors)
        if rel == "index.html":
            shot = tmp_path / "site_index.png"
            assert browser.save_screenshot(str(shot))
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy2(shot, SHOTS / "site_index.png")
        if rel.startswith("reports/models"):
            assert browser.execute_script("return document.images.length") >= 2    # reliability and SHAP figures
