"""Resume on its own: a download killed with SIGKILL while 4 workers fetch klines, mark price, aggTrades, open
interest and funding, then run again with gap repair switched off, asks only for the windows the catalogue does
not cover, and stores exactly what an uninterrupted run stores. Each check is also run on a planted bug."""
import contextlib, math, os, re, shutil, signal, sqlite3, subprocess, sys, time
import numpy as np, pandas as pd, pytest
from conftest import ROOT, run_sim
from test_history import FUTBOT, stored
from futbot.history import Store, missing_ranges
from futbot.intervals import MINUTE_MS, HOUR_MS

SYM = "BTCUSDT"
ARGS = ["--start", "2024-01-20", "--end", "2024-02-29", "--datasets", "klines,mark,agg_trades,open_interest,funding",
        "--intervals", "1m", "--agg-hours", "3", "--workers", "4", "--flush-every", "2", "--no-repair",
        "--weight-budget", "1000000"]      # the frozen exchange's limit: the runs follow each other within a minute
TASKS = {("klines", "1m"): 1000 * MINUTE_MS, ("mark", "1m"): 1000 * MINUTE_MS,   # each task's request window
         ("agg_trades", None): 10 * MINUTE_MS, ("open_interest", None): 500 * 5 * MINUTE_MS,
         ("funding", None): 1000 * 8 * HOUR_MS}
PARTIAL = {"klines", "mark", "agg_trades", "open_interest"}   # killed once each of these has covered some windows

def _main(patch:str)->str:
    "A `python -c` program: `patch`, then the futbot command line"
    head = "import os, signal, sys, threading, futbot.history as h"
    return f"{head}\n{patch}\nfrom futbot.cli import main\nsys.exit(main(sys.argv[1:]))\n"

KILL_AT_A_FLUSH = _main('''
write_rows = h.Store.write_rows
def write_rows_or_die(self, *a, **k):
    with self.lock:           # no other task is half-way through a flush: kill here, before this one writes
        if all(self.covered("BTCUSDT", ds, iv) for ds, iv in
               (("klines", "1m"), ("mark", "1m"), ("agg_trades", None), ("open_interest", None))):
            os.kill(os.getpid(), signal.SIGKILL)
        return write_rows(self, *a, **k)
h.Store.write_rows = write_rows_or_die''')

DROP_FIRST_RESUMED_ROW = _main('''
state, run_task, fetch = threading.local(), h.run_task, h._fetch_window
def resumed_run_task(rest, store, symbol, ds, interval, *a, **k):
    state.resumed = bool(store.covered(symbol, ds.name, interval))
    return run_task(rest, store, symbol, ds, interval, *a, **k)
def fetch_window(*a, **k):
    df = fetch(*a, **k)
    if getattr(state, "resumed", False):     # planted bug: the first row of a resumed download is lost
        state.resumed = False
        df = df.iloc[1:]
    return df
h.run_task, h._fetch_window = resumed_run_task, fetch_window''')

REFETCH_EVERYTHING = _main('''
h.Store.covered = lambda self, *a: []        # planted bug: resume ignores the catalogue's coverage''')

def cmd(url, data_dir, program=None):
    exe = [sys.executable, "-c", program] if program else [FUTBOT]
    return [*exe, "download", "--symbol", SYM, "--exchange", url, "--data-dir", str(data_dir), "--no-progress", *ARGS]

def task_requests(stdout)->dict:
    "(dataset, interval) -> requests, from the summary table of `futbot download`"
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\S+)\s+(\d+)\s+(\d+)\s", line)
        if m: out[(m[1], None if m[2] == "-" else m[2])] = int(m[4])
    return out

def covered_datasets(data_dir)->set:
    "The datasets with some coverage in the catalogue of a running download (read while it writes)"
    db = data_dir / "raw" / "catalog.sqlite"
    if not db.exists(): return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            return {r[0] for r in c.execute("SELECT DISTINCT dataset FROM coverage")}
    except sqlite3.OperationalError: return set()       # tables not created yet

def sigkill_when_covered(url, d):
    "Start the download, SIGKILL it from outside as soon as every PARTIAL dataset has coverage"
    p = subprocess.Popen(cmd(url, d), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    t0 = time.time()
    while not PARTIAL <= covered_datasets(d) and time.time() - t0 < 60: time.sleep(0.005)
    assert p.poll() is None, "the download finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()

def killed_at_a_flush(url, d):
    "The download SIGKILLs itself at the first flush after every PARTIAL dataset has coverage"
    r = subprocess.run(cmd(url, d, KILL_AT_A_FLUSH), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-1000:])

@pytest.fixture(scope="module")
def frozen_sim():
    "A frozen clock keeps the last-30-days and last-hours ranges put"
    with run_sim("--weight-limit", "1000000", speed=0.001) as url: yield url

@pytest.fixture(scope="module")
def ref(frozen_sim, tmp_path_factory):
    "The uninterrupted run: its store and the requests of each task"
    d = tmp_path_factory.mktemp("ref")
    r = subprocess.run(cmd(frozen_sim, d), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-1000:]
    n = task_requests(r.stdout)
    assert set(n) == set(TASKS) and all(n[t] > 2 for t in TASKS if t[0] != "funding"), r.stdout
    return d, n

@pytest.fixture(scope="module")
def killed(frozen_sim, ref, tmp_path_factory):
    "kind -> a store killed half-way (made once per kind), and the windows each task still missed then"
    made = {}
    def get(kind):
        if kind in made: return made[kind]
        d = tmp_path_factory.mktemp(f"killed_{kind}")
        {"sigkill": sigkill_when_covered, "at_a_flush": killed_at_a_flush}[kind](frozen_sim, d)
        ref_st, st = Store(ref[0]), Store(d)
        missing = {}
        for (ds, iv), span in TASKS.items():
            (a, b), = ref_st.covered(SYM, ds, iv)                     # the task's whole range
            gaps = missing_ranges(a, b, st.covered(SYM, ds, iv))
            missing[(ds, iv)] = sum(math.ceil((y - x) / span) for x, y in gaps)
        partial = {ds for ds, iv in TASKS if 0 < missing[(ds, iv)] < ref[1][(ds, iv)]}
        assert {"agg_trades", "klines", "mark"} <= partial, (kind, missing, ref[1])
        made[kind] = d, missing
        return made[kind]
    return get

def rerun(url, killed, tmp_path, program=None):
    "Run the download again on a copy of the killed store"
    d = tmp_path / "rerun"
    shutil.copytree(killed, d)
    return subprocess.run(cmd(url, d, program), capture_output=True, text=True, timeout=120, cwd=ROOT), d

def check_resume(r, d, ref_dir, missing):
    "The rerun asked only for the windows missing after the kill, and stored (unrepaired) what an uninterrupted run did"
    assert r.returncode == 0, r.stderr[-1000:]
    got = task_requests(r.stdout)
    assert got == missing, f"requests per task {got}, windows missing after the kill {missing}"
    a, b = stored(ref_dir), stored(d)
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    differ = {k: (len(a[k]), len(b[k])) for k in a if not a[k].equals(b[k])}
    assert not differ, f"not as the uninterrupted run (rows there, here): {differ}"
    ids = b[f"{SYM}/agg_trades"]["agg_id"].to_numpy()
    assert (np.diff(ids) == 1).all(), f"aggTrades ids jump after {ids[:-1][np.diff(ids) != 1][:3]}"
    for k in a: pd.testing.assert_frame_equal(b[k], a[k], check_exact=True, obj=k)

@pytest.mark.parametrize("kind", ["sigkill", "at_a_flush"])
def test_resume_fetches_only_missing_windows_and_is_complete(frozen_sim, ref, killed, tmp_path, kind):
    "Killed from outside at any moment, or at a flush: the rerun completes the store with no gap repair"
    d, missing = killed(kind)
    check_resume(*rerun(frozen_sim, d, tmp_path), ref[0], missing)

def test_resume_check_catches_a_dropped_first_row(frozen_sim, ref, killed, tmp_path):
    "Planted bug: each resumed task loses the first row it fetches; aggTrades, with no fixed step, is caught too"
    d, missing = killed("at_a_flush")     # rows on disk are covered, so no resumed row is on disk already
    with pytest.raises(AssertionError, match=r"not as the uninterrupted run.*agg_trades") as e:
        check_resume(*rerun(frozen_sim, d, tmp_path, DROP_FIRST_RESUMED_ROW), ref[0], missing)
    assert "klines/1m" in str(e.value) and "mark/1m" in str(e.value), e.value

def test_resume_check_catches_a_full_refetch(frozen_sim, ref, killed, tmp_path):
    "Planted bug: a rerun that ignores the coverage asks for every window again; the request count says so"
    d, missing = killed("at_a_flush")
    with pytest.raises(AssertionError, match="windows missing after the kill"):
        check_resume(*rerun(frozen_sim, d, tmp_path, REFETCH_EVERYTHING), ref[0], missing)
