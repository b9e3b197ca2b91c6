"""Use cases for templates: saving versions and previewing a render."""

from __future__ import annotations

from commands.access import require
from commands.application import Decision, Ledger
from commands.models import SaveTemplate
from ledger.errors import InvalidCommand, NotFound
from ledger.rendering import TemplateContent, check_template
from ledger.template import Template, TemplateVersion
from ledger.values import Permission, Principal


def save_template(
    ledger: Ledger, principal: Principal, command: SaveTemplate
) -> TemplateVersion:
    """Check a template and save it as the next version."""
    require(principal, Permission.CREATE)
    content = TemplateContent(
        subject=command.subject, text=command.body, html=command.html
    )
    tags = check_template(content, command.channel)

    def decide() -> Decision[TemplateVersion]:
        template_id = Template.id_for(principal.tenant_id, command.template_id)
        template = ledger.load(Template, template_id)
        if template is None:
            template = Template._create(
                Template.Created,
                id=template_id,
                tenant_id=principal.tenant_id,
                template_id=command.template_id,
                channel=command.channel.value,
                description=command.description,
            )
        elif template.channel != command.channel:
            raise InvalidCommand(
                "channel",
                f"Template '{command.template_id}' is for {template.channel}; "
                "save a template for another channel under a new id.",
            )
        template.save_version(
            command.subject, command.body, command.html, list(tags), principal.user_id
        )
        return Decision(template.versions[-1], [template])

    return ledger.execute(decide)


def get_template(ledger: Ledger, principal: Principal, template_id: str) -> Template:
    """A template of the principal's company, with all its versions."""
    require(principal, Permission.VIEW)
    template = ledger.load_in_tenant(
        Template,
        Template.id_for(principal.tenant_id, template_id),
        principal.tenant_id,
        "template",
        template_id,
    )
    if not template.versions:
        raise NotFound("template", template_id)
    return template


def template_content(version: TemplateVersion) -> TemplateContent:
    return TemplateContent(
        subject=version.subject, text=version.text, html=version.html
    )
