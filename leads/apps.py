from django.apps import AppConfig


class LeadsConfig(AppConfig):
    name = "leads"
    verbose_name = "Leads"

    def ready(self):
        from bots.configuration import CONFIGURATION_KEYS
        from leads import receivers, scoring, tools  # noqa: F401  (connects receivers, registers tools)

        # Score weights may only name markers that exist (bots/configuration.py lets apps own their keys).
        CONFIGURATION_KEYS["score_weights"] = scoring.validate_weights
