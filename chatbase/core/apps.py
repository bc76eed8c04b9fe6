from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "chatbase.core"
    label = "core"
    verbose_name = "Accounts and API tokens"
