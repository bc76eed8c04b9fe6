import pytest

from chatbase.core.errors import ValidationFailed
from crm.rules import EVENTS, ParsedRule, parse_rule


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "when hubspot.contact.creation then create_task type=welcome_email priority=high",
            ParsedRule("hubspot.contact.creation", "create_task", {"type": "welcome_email", "priority": "high"}),
        ),
        (
            'WHEN lead.qualified THEN create_task title="Call them back" due_in=2d',
            ParsedRule("lead.qualified", "create_task", {"title": "Call them back", "due_in": "2d"}),
        ),
        ("when lead.created then sync_to_hubspot", ParsedRule("lead.created", "sync_to_hubspot", {})),
        ("when lead.created then tag_lead tag='hot lead'", ParsedRule("lead.created", "tag_lead", {"tag": "hot lead"})),
        (
            "when conversation.ended then notify_email to=sales@example.com subject=Ended",
            ParsedRule("conversation.ended", "notify_email", {"to": "sales@example.com", "subject": "Ended"}),
        ),
        (
            "when gmail.message.received then log level=warning message=mail",
            ParsedRule("gmail.message.received", "log", {"level": "warning", "message": "mail"}),
        ),
        ("when calendar.event.created then log", ParsedRule("calendar.event.created", "log", {})),
    ],
)
def test_valid_rules_parse(text, expected):
    assert parse_rule(text) == expected


def test_every_event_is_accepted():
    for event in EVENTS:
        assert parse_rule(f"when {event} then log").event == event


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("", "invalid_rule", "when EVENT then ACTION"),
        ("if lead.created then log", "invalid_rule", "when EVENT then ACTION"),
        ("when lead.created log", "invalid_rule", "when EVENT then ACTION"),
        ("when lead.deleted then log", "unknown_event", "Unknown event 'lead.deleted'"),
        ("when lead.created then launch_rocket", "unknown_action", "Unknown action 'launch_rocket'"),
        ("when lead.created then create_task priority", "invalid_parameter", "'priority' is not a parameter"),
        ("when lead.created then create_task =high", "invalid_parameter", "is not a parameter"),
        ("when lead.created then create_task priority=urgent", "invalid_parameter", "'priority' must be one of"),
        ("when lead.created then create_task due_in=tomorrow", "invalid_parameter", "'due_in' must be a duration"),
        ("when lead.created then create_task colour=red", "invalid_parameter", "create_task has no parameter 'colour'"),
        ("when lead.created then create_task type=a type=b", "invalid_parameter", "given twice"),
        ("when lead.created then tag_lead", "invalid_parameter", "tag_lead needs tag"),
        ("when lead.created then notify_email to=not-an-address", "invalid_parameter", "must be an e-mail address"),
        ("when lead.created then sync_to_hubspot now=1", "invalid_parameter", "parameters: none"),
        ('when lead.created then log message="unclosed', "invalid_rule", "check the quotes"),
        ("when lead.created then log message=''", "invalid_parameter", "must be a non-empty text"),
    ],
)
def test_invalid_rules_say_why(text, code, reason):
    with pytest.raises(ValidationFailed) as caught:
        parse_rule(text)
    assert caught.value.code == code
    assert reason in caught.value.detail
