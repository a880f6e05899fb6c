"""The published version's manifest as evaluation reads it: documents and failures, checked
against the configured classification levels first."""

from __future__ import annotations

from citewell.core.errors import IndexIntegrityError
from citewell.core.models import Frozen
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout, scheme_problems
from citewell.retrieval.manifest import DocumentEntry, FailureEntry, Manifest


class PublishedManifest(Frozen):
    index: str
    version: str
    documents: tuple[DocumentEntry, ...]
    failures: tuple[FailureEntry, ...]


def read_published_manifest(settings: Settings, index: str | None) -> PublishedManifest | None:
    """The current version's documents and failures; None when nothing is published. Raises
    :class:`IndexIntegrityError` when the stored ranks mean other levels than the configured
    ones, as serving does: filtered by the new levels, a lower clearance would see what was
    written above it."""
    layout = IndexLayout(settings, index)
    version = layout.current_version()
    if version is None:
        return None
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        problems = scheme_problems(settings.scheme, manifest)
        if problems:
            raise IndexIntegrityError(version, problems)
        return PublishedManifest(
            index=layout.name,
            version=version,
            documents=tuple(manifest.iter_documents()),
            failures=tuple(manifest.failures()),
        )
    finally:
        manifest.close()
