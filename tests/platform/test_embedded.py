import json
import os
import subprocess
import sys
from pathlib import Path

from conduit.platform.db.embedded import HANDLES_FILE, forget_dead_handles


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_forgets_processes_that_died_without_cleaning_up(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / HANDLES_FILE).write_text(json.dumps([dead, os.getpid()]))
    forget_dead_handles(tmp_path)
    assert json.loads((tmp_path / HANDLES_FILE).read_text()) == [os.getpid()]


def test_leaves_a_missing_or_empty_list_alone(tmp_path: Path) -> None:
    forget_dead_handles(tmp_path)
    assert not (tmp_path / HANDLES_FILE).exists()
    (tmp_path / HANDLES_FILE).write_text("")
    forget_dead_handles(tmp_path)
    assert (tmp_path / HANDLES_FILE).read_text() == ""
