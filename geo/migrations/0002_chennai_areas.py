"""Ships the major Chennai neighbourhoods as service areas (editable in admin).

Centres are the neighbourhoods' commonly published coordinates; the radius is how
far around the centre still counts as the area (larger for the sprawling suburbs).
"""

from django.db import migrations

from geo import chennai


def add_areas(apps, schema_editor):
    chennai.seed(apps.get_model("geo", "ServiceArea"))


def remove_areas(apps, schema_editor):
    ServiceArea = apps.get_model("geo", "ServiceArea")
    ServiceArea.objects.filter(city="Chennai", name__in=[a[0] for a in chennai.CHENNAI_AREAS]).delete()


class Migration(migrations.Migration):
    dependencies = [("geo", "0001_initial")]

    operations = [migrations.RunPython(add_areas, remove_areas)]
