"""Optuna tuning: two worker processes share one study over SQLite and over a real PostgreSQL server, one worker
reproduces its trials, the objective reads only the rows of its folds, and the median rule prunes."""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before LightGBM loads: no spinning OpenMP threads
import dataclasses, json, shutil, socket, subprocess, sys, tempfile, time
from functools import partial
from pathlib import Path
import numpy as np
import optuna
import pytest
from futbot.tune import (tune, objective, run_trials, trials_frame, make_sampler, make_pruner, count_trials, SPACES,
                         PRUNE_STARTUP, quiet_optuna)

ROUNDS = 30        # boosting rounds a test trial may grow: tiny models, fast trials
BUDGET = 8         # trials of a shared study
WORKER_S = 240     # longest a worker process may take

BUILD = '''
import numpy as np
from futbot.features import synth_bars, build_features
from futbot.labels import make_labels
from futbot.train import walk_forward

def table(days=8):
    "5m decisions from 8 days of seeded 1m bars: a quarter of the 5m and 15m features, 4 h barrier labels, weights"
    bars = {"1m": synth_bars(60 * 24 * days, seed=4, vol=0.0012)}
    F = build_features(bars, config={"data.timeframes": ["5m", "15m"], "data.base_timeframe": "5m"}).iloc[:, ::4]
    lab = make_labels(bars, horizon="4h", base="5m")
    ok = lab["label"].notna().to_numpy() & lab.index.isin(F.index)
    lab = lab[ok]
    return F.reindex(lab.index), lab["label"].to_numpy(), lab["t_end"], lab["weight"].to_numpy()
'''
exec(BUILD)   # the same `table` in this process and in the workers

WORKER = BUILD + '''
import json, os, sys, time
from pathlib import Path
from futbot.train import walk_forward
from futbot.tune import tune
url, gate, n_trials, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
X, y, t_end, w = table()
folds = walk_forward(X.index, t_end, n_folds=3, embargo="4h")
(gate / str(os.getpid())).touch()
while len(list(gate.iterdir())) < 2: time.sleep(0.05)     # both workers start trials together
r = tune("lgbm", X, y, folds, weight=w, n_trials=n_trials, storage=url, study_name="shared", t_end=t_end,
         max_rounds=rounds, progress=False)
print(json.dumps(dict(n_trials=r.n_trials, best=r.best_params, value=r.best_value, storage=r.storage)))
'''

@pytest.fixture(scope="module")
def data():
    from futbot.train import walk_forward
    X, y, t_end, w = table()
    return X, y, t_end, w, walk_forward(X.index, t_end, n_folds=3, embargo="4h")

def study_frame(name:str, folder:Path):
    "`trials_frame` of a study in the SQLite file `tune` writes under `folder`"
    return trials_frame(optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}"))

def two_workers(url:str, tmp:Path)->list:
    "Run two worker processes on the study `shared` at `url`; their JSON results"
    gate = tmp / "gate"
    gate.mkdir()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(gate), str(BUDGET), str(ROUNDS)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in ps:
        try: out, err = p.communicate(timeout=WORKER_S)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        assert p.returncode == 0, f"worker {p.pid} exited {p.returncode}: {err[-3000:]}"
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return ps, outs

def check_shared_study(url:str, ps:list, outs:list):
    "Both finished, the study holds the budget of finished trials from both workers, best params in range"
    study = optuna.load_study(study_name="shared", storage=url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(done) == BUDGET, trials_frame(study)
    assert {t.user_attrs["pid"] for t in done} == {p.pid for p in ps}
    assert all(o["n_trials"] == BUDGET for o in outs), outs
    assert outs[0]["best"] == outs[1]["best"] == study.best_trial.user_attrs["params"]
    assert outs[0]["value"] == study.best_value
    best = outs[0]["best"]
    for name, (lo, hi, *_) in SPACES["lgbm"].items(): assert lo <= best[name] <= hi, (name, best[name])
    assert best["n_estimators"] == ROUNDS

def test_two_workers_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    ps, outs = two_workers(url, tmp_path)
    check_shared_study(url, ps, outs)

def pg_bin()->Path:
    "The folder of PostgreSQL's server binaries, installing Debian's `postgresql` where they are missing"
    def found():
        w = shutil.which("pg_ctl")
        dirs = [Path(w).resolve().parent] if w else []
        dirs += sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")), reverse=True,
                       key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
        return [d for d in dirs if (d / "initdb").exists() and (d / "createdb").exists()]
    if not found():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
            assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}"
    assert found(), "no initdb/pg_ctl after apt-get install postgresql"
    return found()[0]

def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

@pytest.fixture
def postgres():
    "A throwaway PostgreSQL server on 127.0.0.1 (data and socket in a temporary folder); yields its database URL"
    b = pg_bin()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []   # postgres refuses to run as root
    home = Path(tempfile.mkdtemp(prefix="futbot-pg-"))
    if as_pg: shutil.chown(home, "postgres")
    data, port = home / "data", free_port()
    run = lambda *cmd: subprocess.run([*as_pg, *map(str, cmd)], capture_output=True, text=True, timeout=120)
    started = False
    try:
        r = run(b / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        assert r.returncode == 0, f"initdb failed: {r.stderr[-2000:]}"
        r = run(b / "pg_ctl", "-D", data, "-l", home / "server.log", "-w", "-t", "60",
                "-o", f"-h 127.0.0.1 -p {port} -k {home} -F", "start")
        started = r.returncode == 0
        assert started, f"pg_ctl start failed: {r.stderr[-2000:]} {(home / 'server.log').read_text()[-2000:]}"
        r = run(b / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "futbot")
        assert r.returncode == 0, f"createdb failed: {r.stderr[-2000:]}"
        yield f"postgresql+psycopg2://postgres:secret@127.0.0.1:{port}/futbot"
    finally:
        if started: run(b / "pg_ctl", "-D", data, "stop", "-m", "fast")
        shutil.rmtree(home, ignore_errors=True)

def test_two_workers_share_one_postgresql_study(postgres, tmp_path):
    ps, outs = two_workers(postgres, tmp_path)
    check_shared_study(postgres, ps, outs)
    assert outs[0]["storage"] == postgres.replace(":secret@", ":***@")         # no password in what tune reports

def test_one_worker_reproduces_its_trials(data, tmp_path):
    X, y, t_end, w, folds = data
    run = lambda d, seed=42: tune("lgbm", X, y, folds, weight=w, n_trials=4, t_end=t_end, max_rounds=ROUNDS, seed=seed,
                                  artifacts_dir=tmp_path / d, progress=False)
    a, b, c = run("a"), run("b"), run("c", seed=7)
    assert (a.best_params, a.best_value, a.n_trials, a.study_name) == (b.best_params, b.best_value, 4, b.study_name)
    assert study_frame(a.study_name, tmp_path / "a").equals(study_frame(b.study_name, tmp_path / "b"))
    assert c.best_params != a.best_params and c.study_name != a.study_name

def test_objective_reads_only_the_rows_of_its_folds(data, tmp_path):
    X, y, t_end, w, _ = data
    from futbot.train import walk_forward
    n = int(len(X) * 0.7)                                                   # folds over the first 70% only, rolling:
    folds = walk_forward(X.index[:n], t_end[:n], n_folds=3, mode="rolling", window=1, embargo="4h")  # purged gaps
    used = np.unique(np.concatenate([np.r_[f.train, f.valid] for f in folds]))
    out = np.setdiff1d(np.arange(len(X)), used)
    assert len(out) > 0.3 * len(X) and (out < n).any()                       # the tail and the purged gaps
    Xb, yb, wb = X.copy(), y.copy(), w.copy()
    rng = np.random.default_rng(0)
    shape = (len(out), X.shape[1])
    Xb.iloc[out] = np.where(rng.random(shape) < 0.5, np.nan, 1e12 * rng.normal(size=shape))
    yb[out], wb[out] = np.nan, -5.0
    run = lambda d, X, y, w: tune("lgbm", X, y, folds, weight=w, n_trials=4, t_end=t_end, max_rounds=ROUNDS,
                                  study_name="poison", artifacts_dir=tmp_path / d, progress=False)
    clean, poisoned = run("clean", X, y, w), run("poisoned", Xb, yb, wb)
    assert dataclasses.replace(poisoned, storage=clean.storage) == clean
    same = lambda d: study_frame("poison", tmp_path / d).drop(columns="worker")
    assert same("clean").equals(same("poisoned"))

GOOD = dict(num_leaves=7, learning_rate=0.03, min_child_samples=300, colsample_bytree=0.5, subsample=0.8,
            reg_lambda=10.0)     # a cautious model: near the base rate on these martingale bars
BAD = dict(num_leaves=255, learning_rate=0.2, min_child_samples=10, colsample_bytree=1.0, subsample=1.0,
           reg_lambda=1e-3)      # fits noise from the first round

def test_median_rule_prunes_hopeless_trials(data):
    X, y, t_end, w, folds = data
    study = optuna.create_study(sampler=make_sampler(0), pruner=make_pruner())
    for i in range(PRUNE_STARTUP): study.enqueue_trial({**GOOD, "learning_rate": 0.02 + 0.005 * i})
    for i in range(3): study.enqueue_trial({**BAD, "num_leaves": 255 - i})
    fn = partial(objective, kind="lgbm", X=X, y=y, folds=folds, weight=w, t_end=t_end, max_rounds=ROUNDS)
    with quiet_optuna(): run_trials(study, fn, budget=PRUNE_STARTUP + 3)
    states = trials_frame(study)["state"].tolist()
    assert states[:PRUNE_STARTUP] == ["COMPLETE"] * PRUNE_STARTUP, states
    assert states[PRUNE_STARTUP:].count("PRUNED") >= 2, (states, trials_frame(study)["value"].tolist())
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(len(t.intermediate_values) < len(folds) for t in pruned)      # stopped before its last fold
    assert count_trials(study) == PRUNE_STARTUP + 3
