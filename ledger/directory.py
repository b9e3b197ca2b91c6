"""The tenant's directory: the company itself and its customers."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

DIRECTORY_NAMESPACE = uuid.UUID("0b5a4c0e-7d2b-4f8e-8a55-58c9f1e6a4d1")


class Company(Aggregate):
    """A tenant: one company, its senders and its messaging settings."""

    if TYPE_CHECKING:
        tenant_id: str
        name: str
        email_sender: str | None
        sms_sender: str | None
        default_region: str

    @staticmethod
    @lru_cache(maxsize=65536)
    def id_for(tenant_id: str) -> uuid.UUID:
        return uuid.uuid5(DIRECTORY_NAMESPACE, f"company\x1f{tenant_id}")

    class Registered(Aggregate.Created):
        class_version = 1
        tenant_id: str
        name: str
        email_sender: str | None
        sms_sender: str | None
        default_region: str

        def apply(self, company: Company) -> None:
            company.tenant_id = self.tenant_id
            company.settle(self)

    class Updated(Aggregate.Event):
        class_version = 1
        name: str
        email_sender: str | None
        sms_sender: str | None
        default_region: str

        def apply(self, company: Company) -> None:
            company.settle(self)

    def settle(self, event: Registered | Updated) -> None:
        self.name = event.name
        self.email_sender = event.email_sender
        self.sms_sender = event.sms_sender
        self.default_region = event.default_region

    def details(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "email_sender": self.email_sender,
            "sms_sender": self.sms_sender,
            "default_region": self.default_region,
        }


class Customer(Aggregate):
    """A customer of a tenant, with the addresses messages default to."""

    if TYPE_CHECKING:
        tenant_id: str
        customer_id: str
        name: str
        customer_type: str
        email: str | None
        cell_phone: str | None

    @staticmethod
    @lru_cache(maxsize=65536)
    def id_for(tenant_id: str, customer_id: str) -> uuid.UUID:
        return uuid.uuid5(
            DIRECTORY_NAMESPACE, f"customer\x1f{tenant_id}\x1f{customer_id}"
        )

    class Registered(Aggregate.Created):
        class_version = 1
        tenant_id: str
        customer_id: str
        name: str
        customer_type: str
        email: str | None
        cell_phone: str | None

        def apply(self, customer: Customer) -> None:
            customer.tenant_id = self.tenant_id
            customer.customer_id = self.customer_id
            customer.settle(self)

    class Updated(Aggregate.Event):
        class_version = 1
        name: str
        customer_type: str
        email: str | None
        cell_phone: str | None

        def apply(self, customer: Customer) -> None:
            customer.settle(self)

    def settle(self, event: Registered | Updated) -> None:
        self.name = event.name
        self.customer_type = event.customer_type
        self.email = event.email
        self.cell_phone = event.cell_phone

    def details(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "customer_type": self.customer_type,
            "email": self.email,
            "cell_phone": self.cell_phone,
        }

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else ""
