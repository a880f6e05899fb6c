"""Readiness: whether a search of the configured index would succeed now.

One check (:meth:`retrieval.serving_version.ServedVersions.readiness`) answers it for
``/readyz`` and for ``citewell index ready``: the published version is open and passed its
integrity check, its files are still as recorded, the stores answer, and the query embedder
loads. ``reason`` is a fixed code safe to show anyone (``/readyz`` is public); ``detail`` is for
operators (logs, CLI) and may name versions and files.
"""

from __future__ import annotations

from typing import Literal

from citewell.core.models import Frozen

NotReadyReason = Literal[
    "no_published_version",
    "integrity_failed",
    "store_unavailable",
    "model_unavailable",
    "not_loaded",
]


class Readiness(Frozen):
    ready: bool
    reason: NotReadyReason | None = None
    detail: str | None = None
    version: str | None = None  # the version being served, when one is
