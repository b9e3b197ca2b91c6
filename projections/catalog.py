"""The read models the ledger keeps, by name."""

from __future__ import annotations

from typing import Any

from ledger.errors import ProjectionError
from projections.directory import DirectoryProjection
from projections.reporting import ReportingProjection
from projections.runtime import Projection
from projections.timeline import TimelineProjection

PROJECTIONS: dict[str, Projection[Any]] = {
    projection.name: projection
    for projection in (
        TimelineProjection(),
        ReportingProjection(),
        DirectoryProjection(),
    )
}


def projection_named(name: str) -> Projection[Any]:
    """The projection called `name`; an unknown name says which ones exist."""
    if name not in PROJECTIONS:
        raise ProjectionError(
            f"There is no projection '{name}'; choose one of: "
            f"{', '.join(sorted(PROJECTIONS))}."
        )
    return PROJECTIONS[name]
