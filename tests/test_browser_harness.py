"""The headless-browser harness itself: a visit leaves nothing behind.

CI once failed a docs test in the harness's cleanup: Chromium's helper processes outlived the
main process and were still writing into the profile while it was being removed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.browser import visit_page


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_visit_leaves_no_browser_process_profile_or_temporary_file() -> None:
    tmp = Path(tempfile.gettempdir())
    before = set(os.listdir(tmp))
    visit = visit_page("about:blank", ready="true", expressions={"title": "document.title"})
    assert visit.values == {"title": ""}
    left = {name for name in set(os.listdir(tmp)) - before if "chromium" in name.lower()}
    assert left == set()
    assert _processes_naming("citewell-chromium-") == []
