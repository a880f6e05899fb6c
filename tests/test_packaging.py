"""The distribution installs one import name, ``citewell``: the repository's top-level folders
(``core/``, ``api/``, …) must never land in site-packages under generic names."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC = (
    "core",
    "api",
    "cli",
    "agent",
    "dags",
    "ingestion",
    "retrieval",
    "evaluation",
    "training",
)


def test_only_citewell_is_importable_outside_the_repository(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, citewell.core.settings, citewell.cli.main, citewell.dags\n"
        f"leaked = [n for n in {GENERIC!r} if importlib.util.find_spec(n) is not None]\n"
        "print(','.join(leaked))\n"
    )
    # Run outside the checkout so only what the install provides is importable.
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            sub = init.parent.relative_to(ROOT / folder).parts
            assert ".".join((name, *sub)) in declared, f"{init.parent} is not installed"


def _checkout_files() -> list[str]:
    """The checkout's files as a clone has them: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [n for n in (n.decode() for n in listed) if n and (ROOT / n).is_file()]


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel built, as a user's `pip install` builds one, from the checkout's files: no
    editable mapping back to the repository."""
    source = tmp_path / "source"
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-w", str(wheels), str(source)],
        capture_output=True,
        check=True,
    )
    (wheel,) = wheels.glob("citewell-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.slow
def test_the_wheel_carries_every_data_file_of_its_packages(wheel: Path) -> None:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    expected = set()
    for name in _checkout_files():
        path = Path(name)
        for package, folder in package_dir.items():
            if path.suffix != ".py" and path.is_relative_to(folder):
                expected.add("/".join((*package.split("."), *path.relative_to(folder).parts)))
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(expected - set(archive.namelist())) == []


def _probe(code: str, cwd: Path, site: Path) -> str:
    """What ``code`` prints, run from ``cwd`` with only the unpacked wheel at ``site``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
def test_an_installed_wheel_finds_every_file_it_loads(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # From the unpacked wheel (first on the path, ahead of the editable install), in a folder
    # other than the checkout: where `citewell demo` looks for its defaults, and what is there.
    probe = (
        "import json, pathlib\n"
        "from citewell.agent.answerability import DEFAULT_CALIBRATION_FILE\n"
        "from citewell.cli.main import build_parser\n"
        "args = build_parser().parse_args(['demo'])\n"
        "kb = pathlib.Path(args.kb)\n"
        "print(json.dumps({'kb': str(kb), 'principals': str(args.principals),\n"
        "    'calibration': str(DEFAULT_CALIBRATION_FILE),\n"
        "    'kb_files': sorted(str(p.relative_to(kb)) for p in kb.rglob('*') if p.is_file())\n"
        "    if kb.is_dir() else []}))\n"
    )
    found = json.loads(_probe(probe, tmp_path, site))
    for key in ("kb", "principals", "calibration"):
        assert Path(found[key]).is_relative_to(site), f"{key} read from outside the wheel"
    for key in ("principals", "calibration"):
        assert Path(found[key]).is_file(), f"{key}: {found[key]} is not in the wheel"
    kb = ROOT / "examples" / "kb"
    assert found["kb_files"] == sorted(str(p.relative_to(kb)) for p in kb.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_wheel_inside_another_repository_records_no_commit_of_it(
    wheel: Path, tmp_path: Path
) -> None:
    # A training run's card names the commit of the Citewell checkout it ran from; an install
    # in a project's .venv (inside the project's git repository) has no such commit.
    project = tmp_path / "project"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(project)]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text(".venv/\n")
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], check=True)
    site = project / ".venv" / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = "from citewell.training.cross_encoder import git_commit; print(git_commit())"
    assert _probe(probe, project, site).strip() == "None"
    # From the checkout it is the checkout's HEAD.
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == head.stdout.strip()


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a virtualenv with the wheel installed (not editable); the dependencies
    come from this test's environment, without its editable install of the checkout."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # A path line: the dependencies' folder joins sys.path, its .pth files (the editable
    # install's finder among them) are not run.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slow
def test_an_installed_wheel_ingests_when_run_from_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    # `pip install .` (not -e) in a clone, then `citewell ingest` from the clone's root: its
    # `citewell/` folder must not replace the installed package in the parse workers.
    script = tmp_path / "citewell"  # what pip writes for the console script
    script.write_text(
        "import sys\nfrom citewell.cli.main import main\nif __name__ == '__main__':\n"
        "    sys.exit(main())\n"
    )
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text("default: {classification: public}\n")
    (folder / "travel.md").write_text("# Travel\n\nManagers approve all travel.\n")
    data = tmp_path / "data"
    done = subprocess.run(
        [installed, str(script), "ingest", str(folder), "--data-dir", str(data), "--json"],
        cwd=ROOT,
        # As a shell starts it: what the test process set for itself is not inherited.
        env={k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert (report["added"], report["failed"]) == (["travel.md"], []), report["failed"]
