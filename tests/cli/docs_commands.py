"""Run the shell commands of a Markdown document as written, in order, in one shell session.

Every fenced ``bash`` block of the document runs, unless the line before its fence says why not:
``<!-- docs-test: skip REASON -->`` (e.g. a deployment template with placeholder paths, or a
command that takes hours). Commands run in a scratch folder that looks like a checkout: the
repository's ``examples/`` and ``dags/`` and the test's virtual environment as ``.venv``, so
relative paths in the documents resolve as they do for a reader at the repository root, and
``./.citewell`` lands in the scratch folder. The worktree's code comes first on PYTHONPATH.

Two adaptations, both to run beside other tests: ``citewell serve`` starts in the background on
a free port (the test waits for its banner), and URLs on port 8000 are pointed at that port.
Each command's stdout and stderr are kept per command for the test's assertions.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_MARK = re.compile(r"^<!--\s*docs-test:\s*skip\s+(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<info>[A-Za-z]*)\s*$")
SHELL_INFOS = {"bash", "sh", "shell"}
DOCUMENTED_PORT = "8000"


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence
    commands: tuple[str, ...]
    skip_reason: str | None


@dataclass(frozen=True)
class CommandRun:
    command: str
    stdout: str
    stderr: str
    status: int | None  # None: not reached (an earlier command failed)


def shell_blocks(document: Path) -> list[Block]:
    """The document's shell blocks, each as its commands (continuation lines joined)."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if match is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if match["info"] in SHELL_INFOS:
            previous = next(
                (lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), ""
            )
            skip = SKIP_MARK.match(previous)
            blocks.append(
                Block(
                    document=document,
                    line=i + 1,
                    commands=tuple(_commands(lines[i + 1 : end])),
                    skip_reason=skip["reason"] if skip else None,
                )
            )
        i = end + 1
    return blocks


def _commands(body: list[str]) -> list[str]:
    commands: list[str] = []
    current = ""
    for raw in body:
        line = raw.rstrip()
        if current:
            current += "\n" + line
        else:
            current = line
        if line.endswith("\\"):
            continue
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_checkout(root: Path) -> Path:
    """A folder that looks like a checkout to the documents' relative paths."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("examples", "dags"):
        (root / name).symlink_to(REPO / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


def _script(commands: list[str], out: Path, port: int) -> str:
    parts = [
        "set -o pipefail",
        "SERVER_PID=",
        'trap \'[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait\' EXIT',
    ]
    for n, command in enumerate(commands):
        stdout, stderr, status = out / f"{n}.stdout", out / f"{n}.stderr", out / f"{n}.status"
        command = command.replace(f":{DOCUMENTED_PORT}", f":{port}")
        if re.match(r"^(\.venv/bin/)?citewell( -v)? serve\b", command):
            # Started in the background; ready once its banner names the docs URL.
            parts.append(
                f"{command.split('#')[0].strip()} --port {port} > {stdout} 2> {stderr} &\n"
                "SERVER_PID=$!\n"
                "for _ in $(seq 600); do\n"
                f"  grep -q '/docs' {stdout} 2>/dev/null && break\n"
                '  kill -0 "$SERVER_PID" 2>/dev/null || break\n'
                "  sleep 0.2\n"
                "done\n"
                f"grep -q '/docs' {stdout}; echo $? > {status}\n"
                f'[ "$(cat {status})" = 0 ] || exit 1'
            )
            continue
        parts.append(
            f"{{\n{command}\n}} > {stdout} 2> {stderr}\n"
            f"code=$?; echo $code > {status}\n"
            '[ "$code" = 0 ] || exit "$code"'
        )
    return "\n".join(parts) + "\n"


def shared_model_cache() -> dict[str, str]:
    """The test run's model exports (tests/conftest.py) for documents whose point is not the
    first run's export: a fresh one costs each document 20-40 s of CPU. The README's quick tour
    keeps its own, as a new user's first command has none."""
    folder = os.environ.get("CITEWELL_MODEL_CACHE_DIR")
    return {"CITEWELL_MODEL_CACHE_DIR": folder} if folder else {}


def run_document(
    document: Path,
    workdir: Path,
    env: dict[str, str],
    timeout_s: float = 1800,
) -> list[CommandRun]:
    """Run every command of the document's runnable blocks, in order, in one bash session."""
    commands = [
        c for block in shell_blocks(document) if not block.skip_reason for c in block.commands
    ]
    out = workdir.parent / f"{workdir.name}-out"
    out.mkdir(parents=True, exist_ok=True)
    script = out / "script.sh"
    script.write_text(_script(commands, out, free_port()), encoding="utf-8")
    base_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CITEWELL_", "AIRFLOW", "VIRTUAL_ENV"))
    }
    full_env = {
        **base_env,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.prefix) / 'bin'}:{base_env.get('PATH', '')}",
        **env,
    }
    subprocess.run(
        ["bash", str(script)],
        cwd=workdir,
        env=full_env,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    runs = []
    for n, command in enumerate(commands):
        status_file = out / f"{n}.status"
        runs.append(
            CommandRun(
                command=command,
                stdout=_read(out / f"{n}.stdout"),
                stderr=_read(out / f"{n}.stderr"),
                status=int(status_file.read_text().strip()) if status_file.exists() else None,
            )
        )
    return runs


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def describe_failure(runs: list[CommandRun]) -> str:
    for run in runs:
        if run.status != 0:
            return (
                f"$ {run.command}\nexit {run.status}\n--- stdout\n{run.stdout[-3000:]}\n"
                f"--- stderr\n{run.stderr[-3000:]}"
            )
    return "all commands passed"
