"""The distribution installs one import name, ``citewell``: the repository's top-level folders
(``core/``, ``api/``, …) must never land in site-packages under generic names."""

import subprocess
import sys
import tomllib
from pathlib import Path

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
