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
