"""The Template aggregate: a named message template and all its versions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

from ledger.errors import NotFound

TEMPLATE_NAMESPACE = uuid.UUID("c7a0e0a4-5b0f-4a3e-9d0b-2a4de1b8f0e5")


@dataclass(frozen=True)
class TemplateVersion:
    """One saved version; earlier versions stay usable and on record."""

    number: int
    subject: str | None
    text: str
    html: str | None
    merge_tags: tuple[str, ...]
    saved_by: str | None


class Template(Aggregate):
    """A tenant's template for one channel; each save adds a version."""

    if TYPE_CHECKING:
        tenant_id: str
        template_id: str
        channel: str
        description: str
        versions: list[TemplateVersion]

    @staticmethod
    @lru_cache(maxsize=65536)
    def id_for(tenant_id: str, template_id: str) -> uuid.UUID:
        return uuid.uuid5(TEMPLATE_NAMESPACE, f"{tenant_id}\x1f{template_id}")

    class Created(Aggregate.Created):
        class_version = 1
        tenant_id: str
        template_id: str
        channel: str
        description: str

        def apply(self, template: Template) -> None:
            template.tenant_id = self.tenant_id
            template.template_id = self.template_id
            template.channel = self.channel
            template.description = self.description
            template.versions = []

    class VersionSaved(Aggregate.Event):
        class_version = 1
        number: int
        subject: str | None
        text: str
        html: str | None
        merge_tags: list[str]
        saved_by: str | None

        def apply(self, template: Template) -> None:
            template.versions.append(
                TemplateVersion(
                    number=self.number,
                    subject=self.subject,
                    text=self.text,
                    html=self.html,
                    merge_tags=tuple(self.merge_tags),
                    saved_by=self.saved_by,
                )
            )

    def save_version(
        self,
        subject: str | None,
        text: str,
        html: str | None,
        merge_tags: list[str],
        saved_by: str | None,
    ) -> int:
        number = len(self.versions) + 1
        self.trigger_event(
            self.VersionSaved,
            number=number,
            subject=subject,
            text=text,
            html=html,
            merge_tags=sorted(merge_tags),
            saved_by=saved_by,
        )
        return number

    def pick_version(self, number: int | None) -> TemplateVersion:
        """Version `number`, or the latest when None."""
        if number is None:
            return self.versions[-1]
        if 1 <= number <= len(self.versions):
            return self.versions[number - 1]
        raise NotFound("template version", f"{self.template_id} v{number}")
