"""Contact details in free text: e-mail addresses and phone numbers, validated.

Phone numbers are found by libphonenumber's matcher (``phonenumbers``) at the VALID
leniency: the digits must form a number that exists in the numbering plan of its
country (the default region for numbers written without +country code is
LEAD_DEFAULT_PHONE_REGION). On top of that, a match is dropped when it is an IP
address or a dotted version, when a currency sign stands before it, or when the
words before it name it as something else (an order, invoice, ticket, tracking or
account number).
"""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from chatbase.core.errors import ValidationFailed

_EMAIL_CANDIDATE = re.compile(r"(?<![\w.+-])[\w.+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_validate_email = EmailValidator()

_DOTTED = re.compile(r"^\s*v?\d+(?:\.\d+){2,}\s*$", re.IGNORECASE)
_CURRENCY_BEFORE = re.compile(r"(?:₹|\$|€|£|\brs\.?|\binr|\busd)\s*$", re.IGNORECASE)
_NOT_A_PHONE_BEFORE = re.compile(
    r"\b(?:order|invoice|ticket|ref|reference|booking|tracking|awb|pnr|account|a/c|acct|transaction|txn|serial"
    r"|sr|model|part|sku|gst|gstin|pan|aadhaar|aadhar|isbn|po|case|complaint|receipt|policy"
    r"|consignment|shipment|otp|pin|code)\b\W{0,4}(?:(?:no|number|id|num)\b\W{0,3})?(?:is\s+|was\s+|:\s*)?#?\s*$",
    re.IGNORECASE,
)
# Words that make "no"/"number"/"id" above about a phone after all ("my mobile number is").
_PHONE_WORD_BEFORE = re.compile(
    r"\b(?:phone|mobile|cell|whatsapp|call|contact|tel|telephone|landline|reach)\b[^.!?\n]{0,20}$", re.IGNORECASE
)
LOOKBEHIND_CHARS = 30


def email_normalise(value: object) -> str:
    """A valid e-mail address, lower-cased and stripped; '' for nothing."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ValidationFailed("email: must be a string.")
    value = value.strip().lower()
    if not value:
        return ""
    if len(value) > 254:
        raise ValidationFailed("email: at most 254 characters.")
    try:
        _validate_email(value)
    except ValidationError:
        raise ValidationFailed("email: not a valid e-mail address.") from None
    return value


def phone_normalise(value: object, region: str | None = None) -> str:
    """A valid phone number in E.164 (+919876543210); '' for nothing."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ValidationFailed("phone: must be a string.")
    value = value.strip()
    if not value:
        return ""
    if len(value) > 40:
        raise ValidationFailed("phone: at most 40 characters.")
    try:
        number = phonenumbers.parse(value, region or settings.LEAD_DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise ValidationFailed("phone: not a phone number.") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed("phone: not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def extract_emails(text: str) -> list[str]:
    found: list[str] = []
    for match in _EMAIL_CANDIDATE.finditer(text or ""):
        candidate = match.group(0).rstrip(".-'").lower()
        try:
            _validate_email(candidate)
        except ValidationError:
            continue
        if candidate not in found:
            found.append(candidate)
    return found


def _looks_like_something_else(text: str, start: int, raw: str) -> bool:
    if _DOTTED.match(raw) or raw.count(".") >= 2:
        return True  # 192.168.1.100, 2.10.1.4
    before = text[max(0, start - LOOKBEHIND_CHARS) : start]
    if _CURRENCY_BEFORE.search(before):
        return True
    return bool(_NOT_A_PHONE_BEFORE.search(before)) and not _PHONE_WORD_BEFORE.search(before)


def extract_phones(text: str, region: str | None = None) -> list[str]:
    region = region or settings.LEAD_DEFAULT_PHONE_REGION
    text = text or ""
    # Digits inside an e-mail address are not a phone number.
    masked = _EMAIL_CANDIDATE.sub(lambda m: " " * len(m.group(0)), text)
    found: list[str] = []
    for match in phonenumbers.PhoneNumberMatcher(masked, region, leniency=phonenumbers.Leniency.VALID):
        if _looks_like_something_else(masked, match.start, match.raw_string):
            continue
        number = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        if number not in found:
            found.append(number)
    return found
