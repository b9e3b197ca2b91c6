"""Use cases for the directory: the company's settings and its customers."""

from __future__ import annotations

from commands.access import require
from commands.application import Decision, Ledger
from commands.models import RegisterCompany, UpsertCustomer
from ledger.addresses import normalise_email, normalise_phone
from ledger.directory import Company, Customer
from ledger.errors import NotFound
from ledger.values import Permission, Principal


def register_company(
    ledger: Ledger, principal: Principal, command: RegisterCompany
) -> Company:
    """Set up the principal's company, or update its settings."""
    require(principal, Permission.CREATE)
    return ledger.execute(lambda: decide_company(ledger, principal, command))


def decide_company(
    ledger: Ledger, principal: Principal, command: RegisterCompany
) -> Decision[Company]:
    region = command.default_region.upper()
    details = {
        "name": command.name,
        "email_sender": command.email_sender
        and normalise_email(command.email_sender, "email_sender"),
        "sms_sender": command.sms_sender
        and normalise_phone(command.sms_sender, region, "sms_sender"),
        "default_region": region,
    }
    company = ledger.load(Company, Company.id_for(principal.tenant_id))
    if company is None:
        company = Company._create(
            Company.Registered,
            id=Company.id_for(principal.tenant_id),
            tenant_id=principal.tenant_id,
            **details,
        )
    elif company.details() != details:
        company.trigger_event(Company.Updated, **details)
    return Decision(company, [company])


def company_of(ledger: Ledger, principal: Principal) -> Company:
    """The principal's company, which must have been set up."""
    company = ledger.load(Company, Company.id_for(principal.tenant_id))
    if company is None:
        raise NotFound("company", principal.tenant_id)
    return company


def upsert_customer(
    ledger: Ledger, principal: Principal, command: UpsertCustomer
) -> Customer:
    """Add a customer, or record changes to their details."""
    require(principal, Permission.CREATE)
    company = company_of(ledger, principal)
    return ledger.execute(lambda: decide_customer(ledger, company, command))


def decide_customer(
    ledger: Ledger, company: Company, command: UpsertCustomer
) -> Decision[Customer]:
    details = {
        "name": command.name,
        "customer_type": command.customer_type,
        "email": command.email and normalise_email(command.email, "email"),
        "cell_phone": command.cell_phone
        and normalise_phone(command.cell_phone, company.default_region, "cell_phone"),
    }
    customer_id = Customer.id_for(company.tenant_id, command.customer_id)
    customer = ledger.load(Customer, customer_id)
    if customer is None:
        customer = Customer._create(
            Customer.Registered,
            id=customer_id,
            tenant_id=company.tenant_id,
            customer_id=command.customer_id,
            **details,
        )
    elif customer.details() != details:
        customer.trigger_event(Customer.Updated, **details)
    return Decision(customer, [customer])


def get_customer(ledger: Ledger, principal: Principal, customer_id: str) -> Customer:
    """A customer of the principal's company."""
    require(principal, Permission.VIEW)
    return ledger.load_in_tenant(
        Customer,
        Customer.id_for(principal.tenant_id, customer_id),
        principal.tenant_id,
        "customer",
        customer_id,
    )
