"""Citewell: enterprise RAG ingestion and retrieval with access control and verified citations.

The repository's top-level folders (``core/``, ``retrieval/``, ``ingestion/``, …) install as
``citewell.core``, ``citewell.retrieval``, … (see ``[tool.setuptools] package-dir``), so nothing
generic such as ``core`` or ``api`` lands in site-packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("citewell")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
