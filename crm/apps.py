from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM and integrations"

    def ready(self) -> None:
        from conversations.signals import conversation_ended
        from crm import receivers, tools
        from leads.signals import lead_changed, lead_created, lead_qualified

        lead_changed.connect(receivers.on_lead_changed, dispatch_uid="crm.lead_changed")
        lead_created.connect(receivers.on_lead_created, dispatch_uid="crm.lead_created")
        lead_qualified.connect(receivers.on_lead_qualified, dispatch_uid="crm.lead_qualified")
        conversation_ended.connect(receivers.on_conversation_ended, dispatch_uid="crm.conversation_ended")
        tools.register_all()
