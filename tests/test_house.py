"""House rules that keep the ground floor the shape the later modules copy (issue 9)."""
import ast, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (ROOT / "futbot").glob("*.py") if p.name != "_modidx.py")
MAX_EXPORT_CELL_LINES = 80

def private_imports(path:Path)->list:
    "Names starting with `_` that `path` imports from another futbot module"
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("futbot")):
            out += [f"{path.name}: from {'.' * n.level}{n.module} import {a.name}" for a in n.names if a.name.startswith("_")]
    return out

def test_no_private_names_imported_across_modules():
    bad = [x for p in MODULES for x in private_imports(p)]
    assert not bad, "\n".join(bad)

def test_private_import_scan_can_fail(tmp_path):
    f = tmp_path / "labels.py"
    f.write_text("from .features import _get_bars, get_bars\nfrom futbot.intervals import _month_floor\n")
    assert private_imports(f) == ["labels.py: from .features import _get_bars", "labels.py: from futbot.intervals import _month_floor"]

def export_cells(nb:Path):
    for i, c in enumerate(json.loads(nb.read_text())["cells"]):
        src = "".join(c["source"])
        if c["cell_type"] == "code" and re.match(r"\s*#\|\s*export", src): yield i, src.count("\n") + 1

def test_no_export_cell_over_80_lines():
    long = [f"{nb.name} cell {i}: {n} lines" for nb in sorted((ROOT / "nbs").glob("*.ipynb"))
            for i, n in export_cells(nb) if n > MAX_EXPORT_CELL_LINES]
    assert not long, "\n".join(long)

def test_sim_module_stays_small():
    n = len((ROOT / "futbot" / "sim.py").read_text().splitlines())
    assert n < 1000, f"futbot/sim.py has {n} lines"

TIME_HELPERS = {"interval_ms", "to_ms", "to_seconds", "parse_time", "index_ms", "ms_index", "ms_to_iso", "bar_floor",
                "bar_next", "bar_opens", "add_months", "sub_months", "month_start", "next_month", "months_between"}
ONE_COPY = {"BAR_COLS", "MINUTE_MS", "INTERVALS", "OneLineParser", "iso_date", "port", "symbol", "positive_int"}

def definitions(path:Path)->set:
    "Top-level function, class and constant names defined in a module"
    out = set()
    for n in ast.parse(path.read_text()).body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)): out.add(n.name)
        elif isinstance(n, ast.Assign): out |= {t.id for t in n.targets if isinstance(t, ast.Name)}
    return out

def test_time_and_parsing_helpers_have_one_home():
    homes = {}
    for p in MODULES:
        for name in definitions(p) & (TIME_HELPERS | ONE_COPY): homes.setdefault(name, []).append(p.name)
    twice = {k: v for k, v in homes.items() if len(v) > 1}
    assert not twice, twice
    assert {k for k, v in homes.items() if v == ["intervals.py"]} >= TIME_HELPERS - {"parse_time", "sub_months"}

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pyarrow": raise ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")
sys.meta_path.insert(0, Block())
from futbot.cli import main
sys.exit(main(sys.argv[1:]))
"""

def test_missing_dependency_is_not_called_unbuilt(tmp_path):
    "A futbot module that cannot import a package says which package and how to install it, in one line"
    r = subprocess.run([sys.executable, "-c", BLOCK, "download", "--symbol", "BTCUSDT", "--months", "1",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "not built yet" not in lines[0] and "'pyarrow'" in lines[0] and "make venv" in lines[0], lines[0]

def test_notebooks_are_committed_clean(tmp_path):
    "nbdev_clean changes nothing: outputs are kept, execution counts and metadata are not"
    import shutil
    shutil.copytree(ROOT / "nbs", tmp_path / "nbs")
    r = subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(tmp_path / "nbs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    changed = [p.name for p in sorted((ROOT / "nbs").rglob("*.ipynb"))
               if p.read_bytes() != (tmp_path / "nbs" / p.relative_to(ROOT / "nbs")).read_bytes()]
    assert not changed, f"run nbdev_clean on: {changed}"

def test_notebooks_show_evidence():
    "The rendered notebooks are the docs: each module notebook keeps some small outputs, no big ones"
    for nb in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        outs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outs, f"{nb.name} shows no output"
        for o in outs:
            size = len(json.dumps(o))
            assert size < 60_000, f"{nb.name}: an output of {size} bytes"
