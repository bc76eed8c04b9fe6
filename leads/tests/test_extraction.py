import pytest

from chatbase.core.errors import ValidationFailed
from leads.extraction import email_normalise, extract_emails, extract_phones, phone_normalise


@pytest.mark.parametrize(
    ("text", "emails"),
    [
        ("mail me at Priya.Raman@Example.org.", ["priya.raman@example.org"]),
        ("a@b.co or x+tag@mail.example.in, thanks", ["a@b.co", "x+tag@mail.example.in"]),
        ("twice: a@b.co A@B.CO", ["a@b.co"]),
        ("not an address: user@localhost, @handle, a@b, foo@.com", []),
        ("version 1.2.3@beta is out", []),
    ],
)
def test_emails_are_found_and_validated(text, emails):
    assert extract_emails(text) == emails


@pytest.mark.parametrize(
    ("text", "phones"),
    [
        ("call me on 98765 43210", ["+919876543210"]),
        ("my number is 9876543210", ["+919876543210"]),
        ("+91-98400-12345 or landline 044 2345 6789", ["+919840012345", "+914423456789"]),
        ("WhatsApp +1 (415) 555-2671 please", ["+14155552671"]),
        ("UK office: +44 20 7946 0958", ["+442079460958"]),
        ("mail a@b.co or call 98400 12345", ["+919840012345"]),
    ],
)
def test_phones_are_found_in_e164(text, phones):
    assert extract_phones(text) == phones


@pytest.mark.parametrize(
    "text",
    [
        "we upgraded to 1.2.3.4 yesterday",
        "v2.10.1 broke the export",
        "the router is at 192.168.1.100",
        "it costs ₹45,000 only",
        "Rs. 9876543210 is a lot of money",
        "$1,299.99 on sale",
        "due on 2024-03-15 or 15/03/2024",
        "meeting at 12/12/2025 10:30",
        "order #9876543210 has not arrived",
        "my order number is 9876543210",
        "invoice no: 9845012345",
        "tracking id 9840012345",
        "ISBN 978-3-16-148410-0",
        "pincode 600040",
        "qty 10000 units",
        "call 12345",
    ],
)
def test_no_false_phone_numbers(text):
    assert extract_phones(text) == []


def test_phone_region_setting_is_used(settings):
    settings.LEAD_DEFAULT_PHONE_REGION = "US"
    assert extract_phones("call (415) 555-2671") == ["+14155552671"]
    assert phone_normalise("415 555 2671") == "+14155552671"


def test_normalisers_validate():
    assert email_normalise("  A@Example.COM ") == "a@example.com"
    assert email_normalise("") == "" and phone_normalise(None) == ""
    for bad in ("nope", "a@", "a b@c.d"):
        with pytest.raises(ValidationFailed):
            email_normalise(bad)
    for bad in ("12", "+91 12345", "phone"):
        with pytest.raises(ValidationFailed):
            phone_normalise(bad)
