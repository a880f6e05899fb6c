"""``citewell ingest`` with a broken labels file (issue 16, item 2): a one-line error naming the
file and line, a non-zero exit, nothing published, the previous version still serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from citewell.cli.main import main as cli_main
from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex

pytestmark = pytest.mark.slow

LABELS = (
    "default: {classification: internal, groups: [staff]}\n"
    "rules:\n"
    "  - {match: 'board/**', classification: restricted, groups: [board]}\n"
)
BROKEN = {
    # A glob that does not compile used to escape as an uncaught re.error.
    "bad glob": (LABELS + "  - {match: 'notes/[z-a]*.md', classification: public}\n", 4, "glob"),
    # The second default silently won, relabelling everything public.
    "duplicate default": (
        LABELS + "default: {classification: public, groups: [everyone]}\n",
        4,
        "duplicate key 'default'",
    ),
    "wrong type": (LABELS.replace("groups: [board]", "groups: [1]"), 3, "groups"),
    "unknown key": (LABELS.replace("restricted, groups", "restricted, group"), 3, "unknown key"),
}


def test_broken_labels_file_fails_the_run_and_keeps_the_serving_version(
    tmp_path: Path,
    embedder: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    settings = Settings(data_dir=tmp_path / "data")
    folder = tmp_path / "docs"
    (folder / "board").mkdir(parents=True)
    labels_file = folder / "citewell.labels.yaml"
    labels_file.write_text(LABELS, encoding="utf-8")
    (folder / "board" / "minutes.md").write_text(
        "# Board minutes\n\nThe board approved the sale of the Gdansk terminal.\n", "utf-8"
    )
    Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="docs")
    layout = IndexLayout(settings)
    serving, versions = layout.current_version(), layout.versions()
    capsys.readouterr()  # model loading progress

    for case, (content, line, message) in BROKEN.items():
        labels_file.write_text(content, encoding="utf-8")
        code = cli_main(["ingest", str(folder), "--data-dir", str(settings.data_dir), "--json"])
        out, err = capsys.readouterr()
        assert code != 0 and not out, case
        assert err.startswith(f"citewell: error: {labels_file}:{line}: "), (case, err)
        assert message in err and len(err.strip().splitlines()) == 1, (case, err)
        assert layout.current_version() == serving and layout.versions() == versions, case

    # The previous version still serves, at its labels: staff do not see the board's minutes.
    staff = Principal(name="s", clearance="restricted", groups=frozenset({"staff", "everyone"}))
    service = ServingIndex(settings, embedder=embedder)
    try:
        for mode in SearchMode:
            request = SearchRequest(query="board sale terminal", k=5, mode=mode, rerank=False)
            assert not service.search(staff, request).results
        board = Principal(name="b", clearance="restricted", groups=frozenset({"board"}))
        request = SearchRequest(query="board sale terminal", k=5, mode=SearchMode.DENSE)
        assert service.search(board, request).results
    finally:
        service.close()


def test_a_newline_in_a_file_name_cannot_forge_a_line_of_the_report(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The report printed paths raw: a file named "x\n  FAILED  ...: corrupt.md" printed a second,
    # forged FAILED line, and the real path was split over two lines.
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    folder = tmp_path / "docs"
    folder.mkdir()
    forged = "x\n  FAILED  board-minutes.pdf: corrupt.md"
    (folder / forged).write_text("Tugboats berth at the north quay at dawn.\n", "utf-8")
    (folder / "plain.md").write_text("Pilots board inbound vessels at the fairway buoy.\n", "utf-8")

    code = cli_main(["ingest", str(folder), "--data-dir", str(tmp_path / "data")])

    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("FAILED")]
    unlabelled = [line for line in lines if line.lstrip().startswith("UNLABELLED")]
    assert len(unlabelled) == 2
    assert any(
        line.endswith("  x\\n  FAILED  board-minutes.pdf: corrupt.md") for line in unlabelled
    )
    assert any(line.endswith("  plain.md") for line in unlabelled)


@pytest.mark.parametrize(
    ("refused_path", "unlabelled_path", "shown"),
    [
        ("plans/foreign plan.docx", "loose.md", "foreign%20plan.docx"),
        # The refusal was matched to unlabelled paths by URI suffix: ".../plans/plan.docx" ends
        # with "/plan.docx", so the root's unlabelled plan.docx was never reported.
        ("plans/plan.docx", "plan.docx", "plans/plan.docx"),
    ],
)
def test_a_refused_sensitivity_label_is_reported_once_with_its_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    refused_path: str,
    unlabelled_path: str,
    shown: str,
) -> None:
    # It was also listed as "UNLABELLED (visible to nobody until labelled)", advice that does
    # not apply: labelling its path does not lift a refused sensitivity label.
    from tests.ingestion.mip_files import (
        CONFIDENTIAL,
        OTHER_TENANT,
        POLICY_YAML,
        add_label_parts,
        msip_properties,
        write_docx,
    )

    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(
        "rules:\n  - {match: 'plans/**', classification: internal, groups: [everyone]}\n"
        + POLICY_YAML
    )
    foreign = write_docx(folder / refused_path, "The axolotl contract.")
    add_label_parts(foreign, custom=msip_properties(CONFIDENTIAL, site=OTHER_TENANT))
    if unlabelled_path.endswith(".docx"):
        write_docx(folder / unlabelled_path, "No rule matches this plan.")
    else:
        (folder / unlabelled_path).write_text("No rule matches this note.\n", "utf-8")

    code = cli_main(["ingest", str(folder), "--data-dir", str(tmp_path / "data")])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    refused = [line for line in lines if line.lstrip().startswith("LABEL REFUSED")]
    unlabelled = [line for line in lines if line.lstrip().startswith("UNLABELLED")]
    assert len(refused) == 1 and shown in refused[0]
    assert "unknown tenant" in refused[0]
    assert [line.split()[-1] for line in unlabelled] == [unlabelled_path], lines


def test_a_python_file_in_the_working_directory_never_runs_in_the_parse_workers(
    tmp_path: Path,
) -> None:
    # `cd share && citewell ingest .`: a file in the folder named like a module the parse
    # workers import (the standard library's email here) must stay a document, not code.
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (folder / "travel.md").write_text("# Travel\n\nManagers approve all travel.\n", "utf-8")
    marker = tmp_path / "ran"
    (folder / "email.py").write_text(f"open({str(marker)!r}, 'w').close()\n", "utf-8")
    citewell = Path(sys.executable).with_name("citewell")  # the console script a user runs
    done = subprocess.run(
        [str(citewell), "ingest", ".", "--data-dir", str(tmp_path / "data"), "--json"],
        cwd=folder,
        # As a shell starts it: what the test process set for itself is not inherited.
        env={k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert not marker.exists()
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["added"] == ["travel.md"]
    assert [f["relative_path"] for f in report["failed"]] == ["email.py"]  # not a document type
