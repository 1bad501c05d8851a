"""`make bench`: measure the performance budget of DESIGN.md and print ONE JSON object.

Every key carries its unit. A figure whose stage is not built yet is absent, never faked.
Each stage contributes a function below; progress goes to stderr, the JSON to stdout."""
import json, subprocess, sys, time, importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def cli_help_s():
    "Wall time of `futbot --help` (start-up cost of the console script)"
    t = time.perf_counter()
    subprocess.run([str(BIN / "futbot"), "--help"], check=True, capture_output=True)
    return round(time.perf_counter() - t, 3)

def sim_figures():
    "Local exchange: 7 months of 1m klines for 2 symbols, REST requests per second"
    sim = importlib.import_module("futbot.sim")
    return sim.bench_figures()

FIGURES = [("cli_help_s", cli_help_s), (None, sim_figures)]

def main():
    out = {}
    for key, fn in FIGURES:
        try:
            print(f"bench: {fn.__doc__.splitlines()[0]}", file=sys.stderr, flush=True)
            v = fn()
        except ImportError as e:
            print(f"bench: skipped, not built yet ({e})", file=sys.stderr); continue
        if key is None: out.update(v)
        else: out[key] = v
    print(json.dumps(out, sort_keys=True))

if __name__ == "__main__":
    main()
