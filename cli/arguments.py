"""Argument types that validate at parse time, and the parser class every subcommand uses.

A bad value (a negative count, an unknown choice, a missing input file) ends in one line on
stderr and exit status 2, before anything heavy is imported or opened. The types carry their
bounds as attributes, so tests can walk every subcommand's parser and try values just outside.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from citewell.ingestion.sources import S3Location

# Index and source names: the pattern Settings.index enforces (also a safe folder name).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class CitewellArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``citewell search: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class IntRange:
    """An integer within ``[low, high]``."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.__name__ = "integer"  # argparse names the type in its messages

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(
                f"must be between {self.low} and {self.high}, got {value}"
            )
        return value

    def __repr__(self) -> str:
        return f"IntRange({self.low}, {self.high})"


class FloatRange:
    """A finite number within ``[low, high]``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high
        self.__name__ = "number"

    def __call__(self, text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        # NaN fails both comparisons; infinities fail the bounds.
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(
                f"must be between {self.low:g} and {self.high:g}, got {text.strip()}"
            )
        return value

    def __repr__(self) -> str:
        return f"FloatRange({self.low}, {self.high})"


class ExistingPath:
    """A path that must exist now: ``kind`` is ``"dir"``, ``"file"`` or ``"any"``."""

    def __init__(self, kind: str) -> None:
        if kind not in ("dir", "file", "any"):
            raise ValueError(f"unknown path kind {kind!r}")
        self.kind = kind
        self.__name__ = "path"

    def __call__(self, text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a path, got an empty string")
        path = Path(text).expanduser()
        if not path.exists():
            raise argparse.ArgumentTypeError(f"no such {_KIND_NAMES[self.kind]}: {text}")
        if self.kind == "dir" and not path.is_dir():
            raise argparse.ArgumentTypeError(f"not a folder: {text}")
        if self.kind == "file" and not path.is_file():
            raise argparse.ArgumentTypeError(f"not a file: {text}")
        return path

    def __repr__(self) -> str:
        return f"ExistingPath({self.kind!r})"


_KIND_NAMES = {"dir": "folder", "file": "file", "any": "file or folder"}


class FolderOrS3Prefix(ExistingPath):
    """An existing folder, or an ``s3://bucket/prefix`` URL (checked for form only: whether
    the bucket is reachable is the run's business, with its credentials)."""

    def __init__(self) -> None:
        super().__init__("dir")
        self.__name__ = "folder or s3://bucket/prefix"

    def __call__(self, text: str) -> Path | S3Location:
        if text.strip().lower().startswith("s3://"):
            from citewell.core.errors import ConfigurationError
            from citewell.ingestion.sources import S3Location

            try:
                return S3Location.parse(text)
            except ConfigurationError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from exc
        return super().__call__(text)

    def __repr__(self) -> str:
        return "FolderOrS3Prefix()"


class OutputPath:
    """A path to be written: not an existing folder, and its parent, if it exists, a folder
    (missing parents are created when writing). ``dir=True``: an output folder instead."""

    def __init__(self, *, directory: bool = False) -> None:
        self.directory = directory
        self.__name__ = "path"

    def __call__(self, text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a path, got an empty string")
        path = Path(text).expanduser()
        if self.directory:
            if path.exists() and not path.is_dir():
                raise argparse.ArgumentTypeError(f"not a folder: {text}")
        elif path.is_dir():
            raise argparse.ArgumentTypeError(f"is a folder, expected a file: {text}")
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise argparse.ArgumentTypeError(f"{parent} is not a folder")
                break
        return path

    def __repr__(self) -> str:
        return f"OutputPath(directory={self.directory})"


class Pattern:
    """A string matching ``pattern`` (e.g. index names, which become folder names)."""

    def __init__(self, pattern: str, what: str, example: str) -> None:
        self.regex = re.compile(pattern)
        self.what = what
        self.example = example  # a valid value, for help texts and tests
        self.__name__ = what

    def __call__(self, text: str) -> str:
        # fullmatch: with match, "$" also matches before a trailing newline ("kb\n").
        if not self.regex.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"invalid {self.what} {text!r} (e.g. {self.example!r})"
            )
        return text

    def __repr__(self) -> str:
        return f"Pattern({self.what!r})"


class Text:
    """Non-blank free text (a query, a question), at most ``max_length`` characters."""

    def __init__(self, max_length: int = 10_000) -> None:
        self.max_length = max_length
        self.__name__ = "text"

    def __call__(self, text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        if len(text) > self.max_length:
            raise argparse.ArgumentTypeError(f"longer than {self.max_length} characters")
        return text

    def __repr__(self) -> str:
        return f"Text({self.max_length})"


INDEX_NAME = Pattern(NAME_PATTERN, "index name", "demo")
SOURCE_NAME = Pattern(NAME_PATTERN, "source name", "handbook")
# Which S3 object attributes count as labels: comma-separated "tags" and/or "metadata".
OBJECT_LABELS = Pattern(
    r"^(tags|metadata)(,(tags|metadata))?$", "object label kinds (tags, metadata)", "tags"
)
VERSION = Pattern(r"^v[0-9]{1,12}$", "version", "v000001")
PORT = IntRange(0, 65_535)
SEED = IntRange(0, 2**32 - 1)
TIME_BUDGET_S = FloatRange(1.0, 7 * 24 * 3600.0)
MIN_GAIN = FloatRange(-1.0, 1.0)
