"""The model registry on MLflow (issue 12): register, promote, approve and rollback round-trip through MLflow, survive a
restart of the process, keep whole loadable model folders, and work against a real `mlflow server`."""
import argparse, json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from futbot.config import UsageError, OneLineParser
from futbot.registry import (Registry, synth_model_folder, synth_metadata, run_registry, add_registry_args, URI_ENV,
                             DB_FILE, META_FILE, MODELS_DIR)
from futbot.train import Model

NAME = "lgbm-BTCUSDT"
SERVER_START_S = 90   # the mlflow server usually answers within 10 s; a loaded machine may need more

@pytest.fixture(autouse=True)
def local_uri(monkeypatch):
    monkeypatch.delenv(URI_ENV, raising=False)

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "Real model folders: a first fit, a retrain (same schema), one failing its gates, one on another feature schema"
    d = tmp_path_factory.mktemp("folders")
    out = dict(first=synth_model_folder(d / "first", seed=0), retrain=synth_model_folder(d / "retrain", seed=1),
               schema=synth_model_folder(d / "schema", seed=2, drop=3))
    out["failed"] = Path(shutil.copytree(out["first"], d / "failed"))
    meta = json.loads((out["first"] / META_FILE).read_text())
    (out["failed"] / META_FILE).write_text(json.dumps(synth_metadata(NAME, meta["schema_hash"], False, 0)))
    return out

@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    "One freshly created MLflow SQLite file (creating its tables takes seconds); each test starts from a copy"
    d = tmp_path_factory.mktemp("template")
    Registry(d).names()
    return d / DB_FILE

@pytest.fixture
def reg(tmp_path, template_db):
    (tmp_path / "artifacts").mkdir()
    shutil.copy(template_db, tmp_path / "artifacts" / DB_FILE)
    return Registry(tmp_path / "artifacts")

def one_line(e): return "\n" not in str(e.value) and str(e.value)

def files(d:Path)->set: return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}

def test_register_makes_a_candidate_with_a_whole_loadable_folder(reg, folders):
    assert reg.register(folders["first"]) == "1.0.0"
    assert reg.aliases(NAME) == {"candidate": "1"}
    dest = reg.root / MODELS_DIR / NAME / "1.0.0"
    assert files(dest) == files(folders["first"]) and not list(dest.parent.glob(".*partial"))
    meta = json.loads((dest / META_FILE).read_text())
    assert meta["version"] == "1.0.0" and meta["mlflow_run_id"]
    mv = reg.resolve(NAME, "1.0.0")
    assert mv.source == str(dest) and mv.run_id == meta["mlflow_run_id"]
    assert mv.tags["status"] == "candidate" and mv.tags["gates_passed"] == "true" and float(mv.tags["sharpe"]) == 1.6
    schema = json.loads((dest / "schema.json").read_text())
    for side in ("long", "short"):
        m = Model.load(dest / side)
        assert m.kind == "lgbm" and m.features == schema["features"]
    assert not (Path.cwd() / "mlruns").exists() or (Path.cwd() / "mlruns").stat().st_mtime < time.time() - 600
    assert reg.client.get_run(mv.run_id).info.artifact_uri.startswith((reg.root / "mlruns").as_uri())

def test_promote_refuses_failed_gates_and_approve_records_who_and_why(reg, folders):
    v = reg.register(folders["failed"])
    assert reg.resolve(NAME, v).tags["status"] == "needs_approval"
    with pytest.raises(UsageError, match="did not pass its gates") as e:
        reg.promote(NAME, v, "alice")
    assert one_line(e) and "sharpe 0.4 >= 1.2" in str(e.value) and "registry approve" in str(e.value)
    assert "production" not in reg.aliases(NAME)
    with pytest.raises(UsageError, match="needs --reason"):
        reg.approve(NAME, v, "alice", "")
    reg.approve(NAME, v, "alice", "trades are thin but the edge is real")
    mv = reg.resolve(NAME, "production")
    assert mv.tags["semver"] == v and mv.tags["status"] == "production"
    assert (mv.tags["approved_by"], mv.tags["approved_reason"]) == ("alice", "trades are thin but the edge is real")
    assert [h["action"] for h in json.loads(mv.tags["history"])] == ["registered", "approved"]
    assert reg.production(NAME) == reg.root / MODELS_DIR / NAME / v

STATE = """
import json, sys
from futbot.registry import Registry
r = Registry(sys.argv[1])
n = "lgbm-BTCUSDT"
if len(sys.argv) > 2: print(r.rollback(n, "carol", sys.argv[2]), file=sys.stderr)
print(json.dumps(dict(aliases=r.aliases(n), stack=r.stack(n), production=str(r.production(n)),
                      rows=[[x["version"], x["alias"], x["status"]] for x in r.versions(n)],
                      tags={v: r.resolve(n, v).tags for v in ("1.0.0", "1.1.0", "2.0.0")})))
"""

def state(root, *rollback_reason):
    "The registry's state as a fresh process sees it (optionally after a rollback done by that process)"
    r = subprocess.run([sys.executable, "-c", STATE, str(root), *rollback_reason], capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items() if k != URI_ENV})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)

def test_versions_promote_rollback_survive_a_restart(reg, folders):
    assert [reg.register(folders[k]) for k in ("first", "retrain", "schema")] == ["1.0.0", "1.1.0", "2.0.0"]
    reg.promote(NAME, "1.0.0", "alice", "first model")
    reg.promote(NAME, "1.1.0", "bob", "beats 1.0.0 by the margin")
    s = state(reg.root)                                            # a new process reads what this one wrote
    assert s["aliases"] == {"archived": "1", "production": "2", "candidate": "3"} and s["stack"] == ["1.0.0", "1.1.0"]
    assert s["rows"] == [["1.0.0", "archived", "archived"], ["1.1.0", "production", "production"],
                         ["2.0.0", "candidate", "candidate"]]
    t = s["tags"]["1.1.0"]
    assert (t["promoted_by"], t["promoted_reason"]) == ("bob", "beats 1.0.0 by the margin")
    assert s["tags"]["2.0.0"]["schema_hash"] != s["tags"]["1.0.0"]["schema_hash"]
    s = state(reg.root, "live precision fell")                     # a new process rolls back ...
    assert s["aliases"] == {"production": "1", "candidate": "3"} and s["stack"] == ["1.0.0"]
    assert s["production"] == str(reg.root / MODELS_DIR / NAME / "1.0.0")
    fresh = Registry(reg.root)                                     # ... and this one sees it
    assert fresh.resolve(NAME, "production").tags["semver"] == "1.0.0"
    back = fresh.resolve(NAME, "1.1.0").tags
    assert (back["status"], back["rolled_back_by"]) == ("rolled_back", "carol")
    assert back["rolled_back_reason"] == "live precision fell"
    with pytest.raises(UsageError, match="no earlier production version") as e:
        fresh.rollback(NAME, "carol", "again")
    assert one_line(e)
    hist = json.loads(fresh.model(NAME).tags["history"])
    assert [h["action"] for h in hist] == ["registered"] * 3 + ["promoted", "promoted", "rolled_back"]

def cli(root, *argv):
    p = OneLineParser(prog="futbot registry")
    add_registry_args(p)
    return run_registry(p.parse_args([*argv, "--artifacts-dir", str(root)]))

def test_unknown_names_and_versions_are_one_line(reg, folders, capsys):
    with pytest.raises(UsageError, match="nothing is registered yet") as e:
        cli(reg.root, "list", "lgbm-ETHUSDT")
    assert one_line(e)
    reg.register(folders["first"])
    for argv, msg in ((("show", "xgb-BTCUSDT", "1.0.0"), "no registered model 'xgb-BTCUSDT'.*known: lgbm-BTCUSDT"),
                      (("show", NAME, "3.1.4"), "has no version 3.1.4; versions: 1.0.0"),
                      (("show", NAME, "7"), "has no version 7"),
                      (("promote", NAME, "production"), "no version is production"),
                      (("show", NAME, "1.0"), "is not a version"),
                      (("rollback", NAME, "--reason", "x"), "nothing is production"),
                      (("list", "bad'name"), "no registered model")):
        with pytest.raises(UsageError, match=msg) as e:
            cli(reg.root, *argv)
        assert one_line(e), argv

def test_cli_lists_a_table_and_shows_key_values(reg, folders, capsys):
    reg.register(folders["first"])
    assert cli(reg.root, "promote", NAME, "1", "--who", "dana") == 0
    assert cli(reg.root, "list") == 0
    assert cli(reg.root, "show", NAME, "production") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "lgbm-BTCUSDT 1.0.0 is production; promoted by dana"
    assert out[1].split() == ["name", "version", "alias", "status", "precision", "sharpe", "max_drawdown", "dsr", "ece",
                              "snapshot", "trained_at"]
    assert out[2].split()[:6] == [NAME, "1.0.0", "production", "production", "0.640", "1.600"]
    show = dict(l.split(": ", 1) for l in out[3:] if not l.startswith("history"))
    assert show["version"] == "1.0.0" and show["promoted_by"] == "dana" and show["source"].endswith("/1.0.0")
    assert [l.split()[2] for l in out if l.startswith("history")] == ["registered", "promoted"]
    with pytest.raises(SystemExit):                                  # approve without --reason: argparse, one line
        cli(reg.root, "approve", NAME, "1.0.0")

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

@pytest.fixture
def mlflow_server(tmp_path, template_db):
    "A real `mlflow server` on a free port of 127.0.0.1 with a SQLite backend and served artifacts, stopped at the end"
    shutil.copy(template_db, tmp_path / "server.db")
    port, log = free_port(), open(tmp_path / "server.log", "w")
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1",
           "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "served")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url, t0 = f"http://127.0.0.1:{port}", time.time()
    try:
        while True:
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200: break
            except OSError: pass
            late = proc.poll() is not None or time.time() - t0 > SERVER_START_S
            assert not late, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(10)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        log.close()

def test_a_real_mlflow_server(mlflow_server, folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(URI_ENV, mlflow_server)
    here = Registry(tmp_path / "here")
    assert here.uri == mlflow_server and here.remote
    assert here.register(folders["first"]) == "1.0.0"
    mv = here.resolve(NAME, "1.0.0")
    assert mv.source == f"runs:/{mv.run_id}/model/1.0.0"
    assert cli(tmp_path / "here", "promote", NAME, "1.0.0", "--who", "erin") == 0
    assert cli(tmp_path / "here", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:4] == [NAME, "1.0.0", "production", "production"], out
    mine = here.folder(NAME, "1.0.0")
    shutil.move(mine, tmp_path / "moved")                            # another machine: the folder comes from the server
    there = Registry(tmp_path / "elsewhere")
    p = there.production(NAME)
    assert p == there.root / MODELS_DIR / NAME / "1.0.0" and files(p) == files(tmp_path / "moved")
    assert json.loads((p / META_FILE).read_text())["version"] == "1.0.0"
    assert Model.load(p / "long").features == Model.load(folders["first"] / "long").features
