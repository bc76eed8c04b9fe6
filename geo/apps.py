from django.apps import AppConfig


class GeoConfig(AppConfig):
    name = "geo"
    verbose_name = "Geography"

    def ready(self):
        from geo import tools  # noqa: F401  (registers find_nearest_area)
