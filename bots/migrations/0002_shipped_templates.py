# Every installation starts with the shipped personalities, not only the demo.
from django.db import migrations


def create_templates(apps, schema_editor):
    # The list lives in bots.templates so seed_demo and this migration cannot drift
    # apart; creation skips slugs that exist, so re-running or later edits are safe.
    from bots.templates import SHIPPED_TEMPLATES

    PromptTemplate = apps.get_model("bots", "PromptTemplate")
    has_default = PromptTemplate.objects.filter(is_default=True).exists()
    for spec in SHIPPED_TEMPLATES:
        if not PromptTemplate.objects.filter(slug=spec["slug"]).exists():
            PromptTemplate.objects.create(**{**spec, "is_default": spec.get("is_default", False) and not has_default})


class Migration(migrations.Migration):
    dependencies = [("bots", "0001_initial")]

    operations = [migrations.RunPython(create_templates, migrations.RunPython.noop)]
