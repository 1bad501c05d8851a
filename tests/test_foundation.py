"""The foundation: CLI contract, config errors, Dockerfile CMD, export check, env docs."""
import json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest, yaml
from futbot.config import ENV_VARS, SCHEMA, env_key, load_config
from futbot.cli import build_parser, SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent

def run(cmd, **kw):
    kw.setdefault("cwd", ROOT); kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)

def test_help_lists_design_subcommands(futbot_cmd):
    r = run([futbot_cmd, "--help"])
    assert r.returncode == 0, r.stderr
    for c in "sim download features train backtest replay serve report registry verify-signal demo".split():
        assert re.search(rf"^\s+{re.escape(c)}\b", r.stdout, re.M), f"{c} missing from --help"
    for c in SUBCOMMANDS:
        r = run([futbot_cmd, c, "--help"])
        assert r.returncode == 0 and "usage:" in r.stdout, (c, r.stderr)

def _one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]

def test_missing_config_file(futbot_cmd):
    line = _one_error_line(run([futbot_cmd, "train", "--config", "/nonexistent.yaml"]))
    assert "/nonexistent.yaml" in line and "not found" in line

@pytest.mark.parametrize("text,needle", [
    ("max_leverage: -3\n", "unknown key max_leverage"),                 # flat key outside its section
    ("risk:\n  max_leverage: -3\n", "risk.max_leverage must be"),
    ("risk.max_leverage: -3\n", "risk.max_leverage must be"),
    ("signals:\n  min_confidence: 1.2\n", "signals.min_confidence must be"),
    ("risk:\n  max_leverage: lots\n", "risk.max_leverage must be"),
    ("risk:\n  max_levrage: 3\n", "did you mean risk.max_leverage"),
    ("risk: [1, 2\n", "not valid YAML"),
])
def test_bad_config_values(futbot_cmd, tmp_path, text, needle):
    p = tmp_path / "bad.yaml"; p.write_text(text)
    line = _one_error_line(run([futbot_cmd, "train", "--config", str(p)]))
    assert str(p) in line and needle in line, line

def test_bad_env_value(futbot_cmd):
    env = dict(os.environ, FUTBOT_RISK__MAX_LEVERAGE="-3")
    line = _one_error_line(run([futbot_cmd, "train"], env=env))
    assert "FUTBOT_RISK__MAX_LEVERAGE" in line and "risk.max_leverage" in line

def test_bad_arguments_one_line(futbot_cmd):
    for args in (["download", "--start", "last-week"], ["download", "--exchange", "ftp://x"], ["sim", "--port", "99999"], ["nosuchcommand"]):
        _one_error_line(run([futbot_cmd, *args]))

def test_unbuilt_stage_says_so(monkeypatch, capsys):
    "Every stage is built now; a handler whose module is absent still gives the one line"
    import futbot.cli as cli
    monkeypatch.setitem(cli.HANDLERS, "report", "futbot.no_such_stage:run")
    assert cli.main(["report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not built yet" in err[0], err

def test_env_overrides_file_and_kwargs_override_env():
    assert load_config(env={"FUTBOT_SIGNALS__MIN_CONFIDENCE": "0.9"}).signals.min_confidence == 0.9
    assert load_config(env={"FUTBOT_SIGNALS__MIN_CONFIDENCE": "0.9"}, signals__min_confidence=0.85)["signals.min_confidence"] == 0.85

def test_every_yaml_key_has_a_comment():
    for f in (ROOT / "configs").glob("*.yaml"):
        for line in f.read_text().splitlines():
            if re.match(r"^\s+\w+:\s*\S", line): assert "#" in line, f"{f.name}: no comment on {line!r}"

def test_env_example_documents_every_variable():
    text = (ROOT / ".env.example").read_text()
    for name in ENV_VARS: assert re.search(rf"^{name}=", text, re.M), name
    for k in SCHEMA: assert env_key(k) in text, k
    assert re.search(r"^FUTBOT_HMAC_KEYS=\s*$", text, re.M), "no default secret may be shipped"

def _dockerfile_cmd():
    text = (ROOT / "Dockerfile").read_text()
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    assert len(cmds) == 1
    return json.loads(cmds[0]), text

def test_dockerfile_shape():
    cmd, text = _dockerfile_cmd()
    assert text.count("\nFROM python:3.11-slim") + text.startswith("FROM python:3.11-slim") >= 2, "multi-stage on python:3.11-slim"
    assert re.search(r"^USER (?!root)\w+", text, re.M), "runs as a non-root user"
    assert "HEALTHCHECK" in text and "/health" in text
    assert "requirements.lock" in text and "settings.ini" in text, "installs from the pinned files"
    assert cmd[:2] == ["futbot", "serve"]

def test_dockerfile_cmd_is_accepted_by_futbot(futbot_cmd):
    cmd, _ = _dockerfile_cmd()
    args = build_parser().parse_args(cmd[1:])          # raises SystemExit on any unknown argument
    assert args.command == "serve" and args.host == "0.0.0.0"
    # run the exact command: without a signing key it must refuse plainly, one line (not an argument error)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUTBOT_HMAC", "FUTBOT_API"))}
    p = subprocess.Popen([futbot_cmd, *cmd[1:]], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try: out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:   # a command that hangs is a failure, never a pass
        p.kill(); p.wait(10)
        pytest.fail("`futbot serve` neither refused nor exited within 20 s")
    assert "error: unrecognized arguments" not in err and "invalid" not in err, err
    assert p.returncode == 2 and "FUTBOT_HMAC_KEYS" in err and len(err.strip().splitlines()) == 1, (p.returncode, err)

def test_hand_edit_in_package_fails_the_export_check(tmp_path):
    "A hand edit of futbot/*.py makes tools/check_export.sh (the first step of make test) fail, and is kept"
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("settings.ini", "setup.py", "pyproject.toml", "README.md", "nbs", "futbot", "tools"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    (work / ".venv").symlink_to(ROOT / ".venv")
    ok = run(["bash", "tools/check_export.sh"], cwd=work)
    assert ok.returncode == 0, ok.stderr
    f = work / "futbot" / "config.py"
    f.write_text(f.read_text() + "\nHAND_EDIT = 1\n")
    bad = run(["bash", "tools/check_export.sh"], cwd=work)
    assert bad.returncode == 1 and "disagree" in bad.stderr
    assert "HAND_EDIT = 1" in f.read_text(), "the check must not silently overwrite the hand edit"

def test_demo_runs(futbot_cmd, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUTBOT_HMAC", "FUTBOT_API", "FUTBOT_REDIS"))}
    r = run([futbot_cmd, "demo", "--quick", "--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "art")],
            env=dict(env, FUTBOT_LOG_DIR=str(tmp_path / "logs")), timeout=600)
    assert r.returncode == 0, r.stderr
    from futbot.cli import DEMO_STAGES
    lines = r.stdout.splitlines()
    for name, what, fn in DEMO_STAGES:                  # every stage says how it went, in order
        mark = "[ ok ]" if fn is not None else "[ -- ]"
        assert sum(l.startswith(f"{mark} {name:9s}") for l in lines) == 1, (name, r.stdout)
    assert [l.split()[3] for l in lines if l.startswith("[")] == [n for n, _, _ in DEMO_STAGES], r.stdout
    built = sum(fn is not None for _, _, fn in DEMO_STAGES)
    assert lines[-1].startswith(f"demo: {built} of {len(DEMO_STAGES)} stages ran"), lines[-1]
    out = r.stdout + r.stderr                       # what `make demo > demo.log 2>&1` keeps
    assert "\x1b[" not in out and "\r" not in out, "terminal escapes in the demo's output without a terminal"
    assert len(out.splitlines()) < 100, out
    assert not [l for l in out.splitlines() if l.startswith("{")], "JSON log lines belong in the log file"
    served = next(l for l in lines if l.startswith("[ ok ] serve"))   # live signals, each verified by its own process
    n = sum(1 for l in open(tmp_path / "data" / "demo-serve" / "signals" / "signals.jsonl") if l.strip())
    assert f"futbot verify-signal: verified {n} of {n} signals; 0 failed" in served and " decisions (" in served, served
    assert (tmp_path / "art" / "demo.env").stat().st_mode & 0o077 == 0, "the demo's generated key is readable by others"
    logged = (tmp_path / "logs" / "futbot.log").read_text().splitlines()
    assert any('"event": "progress"' in l for l in logged), "download progress goes to the log without a terminal"

def test_json_logs(tmp_path):
    code = ("from futbot.config import setup_logging, log_event; setup_logging('INFO', log_dir=r'%s', stderr_format='json');"
            "log_event('futbot.test', 'hello', n=3); log_event('futbot.audit', 'signal', signal_id='x')") % tmp_path
    r = run([sys.executable, "-c", code])
    rec = json.loads(r.stderr.splitlines()[0])
    assert set(rec) >= {"ts", "level", "logger", "event"} and rec["n"] == 3
    assert json.loads((tmp_path / "audit.log").read_text().splitlines()[0])["signal_id"] == "x"
    assert len((tmp_path / "futbot.log").read_text().splitlines()) == 2

def test_compose_runs_the_dockerfile_command_beside_the_exchange():
    "docker-compose.yml: serve runs the Dockerfile's CMD (plus where the market is), beside the sim, state on volumes"
    cmd, _ = _dockerfile_cmd()
    comp = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    sv = comp["services"]["serve"]
    assert sv["command"][:len(cmd)] == cmd and sv["command"][len(cmd)] == "--exchange"
    assert build_parser().parse_args([x.replace("${FUTBOT_EXCHANGE:-http://sim:8900}", "http://sim:8900")
                                      for x in sv["command"][1:]]).command == "serve"
    assert comp["services"]["sim"]["command"][:2] == ["futbot", "sim"]
    assert {v.split(":")[1] for v in sv["volumes"]} == {"/app/data", "/app/artifacts", "/app/logs"}
    for k in ("FUTBOT_HMAC_KEYS", "FUTBOT_HMAC_KEY_ID", "FUTBOT_API_TOKENS"):
        assert ":?" in sv["environment"][k], f"{k} must be required, never defaulted"
