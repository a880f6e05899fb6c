"""Two writers of one index at once, as real processes: the second fails at once with a clear
error while the first holds the write lock, a writer SIGKILLed while holding it leaves the
published version serving, and the next run takes the lock and publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout, verify_version
from tests.retrieval.publishing import publish_notes

REPO = Path(__file__).resolve().parents[2]

# Publishes revision argv[2]; with argv[3] (a folder), stops once it holds the write lock and
# has staged its copy, writes "staged" there and waits to be killed.
_WRITER = """
import json, sys, time
from pathlib import Path
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexWriter
from tests.retrieval.publishing import publish_notes

if len(sys.argv) > 3:
    signals = Path(sys.argv[3])
    stage = IndexWriter._open

    def staged_then_wait(self):
        stage(self)
        (signals / "staged").write_text("staged")
        while True:
            time.sleep(0.05)

    IndexWriter._open = staged_then_wait
settings = Settings(data_dir=Path(sys.argv[1]))
try:
    told = {"published": publish_notes(settings, int(sys.argv[2]), count=3)}
except Exception as exc:
    told = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(told))
"""


def _writer(data_dir: Path, revision: int, *hold: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(data_dir), str(revision), *map(str, hold)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _told(proc: subprocess.Popen[str]) -> dict[str, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_second_writer_fails_clearly_and_a_killed_one_leaves_the_published_version(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    first = publish_notes(settings, 1, count=3)
    signals = tmp_path / "signals"
    signals.mkdir()

    holder = _writer(data_dir, 2, signals)
    deadline = time.monotonic() + 300
    while not (signals / "staged").exists():  # the holder staged its copy under the lock
        assert holder.poll() is None, holder.communicate()
        assert time.monotonic() < deadline, "the first writer never staged"
        time.sleep(0.05)

    second = _told(_writer(data_dir, 3))
    assert second == {
        "error": "IndexLockedError: another process is writing index 'default'; "
        "try again when it ends"
    }
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)

    layout = IndexLayout(settings)
    assert layout.current_version() == first
    assert verify_version(settings).version == first
    assert _told(_writer(data_dir, 4)) == {"published": "v000002"}
    assert verify_version(settings).version == "v000002"
    assert layout.versions() == [first, "v000002"]
    assert not any(layout.staging_dir.iterdir())
