"""The explainable qualification score.

A score is a list of lines, one per marker that fired, each with its points and the
words that triggered it; the score is their sum, clamped to 0-100. Seven markers
read what the visitor wrote (purchase intent, budget, quantity, timeline, urgency,
questions about price or availability); four read the lead itself (engagement,
return visits, contact completeness, being inside a service area).

The text detector is rules, not a model: a salesperson can see exactly why a
lead scored what it did, and the rules are tested for precision and recall on a
labelled set (leads/tests/test_scoring_labelled.py). A match does not count when
a negation ("not", "don't", "no", "never"...) stands in the few words before it
in the same clause ("I'm not interested in buying"), or when it is part of an
idiom ("the price of tea in China").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chatbase.core.errors import ValidationFailed


@dataclass(frozen=True)
class Marker:
    name: str
    label: str
    points: int
    description: str


MARKERS: dict[str, Marker] = {
    m.name: m
    for m in (
        Marker("purchase_intent", "Purchase intent", 20, "Says they want to buy, order, book or get a quote."),
        Marker("budget", "Budget", 15, "States a budget or what they can spend."),
        Marker("quantity", "Quantity", 10, "Names a quantity, a bulk order or a team size."),
        Marker("timeline", "Timeline", 10, "Names when they need it (by Friday, within two weeks, next month)."),
        Marker("urgency", "Urgency", 10, "Says it is urgent (ASAP, immediately, today itself)."),
        Marker("price_question", "Price question", 10, "Asks about price, cost, discounts or a quote."),
        Marker("availability_question", "Availability question", 5, "Asks whether something is available."),
        Marker("engagement", "Engagement", 10, "Wrote at least LEAD_ENGAGEMENT_MESSAGES messages."),
        Marker("return_visit", "Return visits", 10, "Came back in more than one conversation."),
        Marker("contact_completeness", "Contact details", 15, "Share of e-mail (40%), phone (40%), name (20%)."),
        Marker("in_service_area", "Inside a service area", 10, "Located within a service area's radius."),
    )
}
TEXT_MARKERS = (
    "purchase_intent",
    "budget",
    "quantity",
    "timeline",
    "urgency",
    "price_question",
    "availability_question",
)
# A conversation showing any of these (without contact details yet) becomes a lead.
BUYING_INTENT_MARKERS = frozenset(TEXT_MARKERS) - {"urgency"}
MAX_EVIDENCE_CHARS = 120


def default_weights() -> dict[str, int]:
    return {name: marker.points for name, marker in MARKERS.items()}


def validate_weights(key: str, value: object) -> dict:
    """Per-bot overrides (bot.configuration["score_weights"]): known markers, -100..100 points."""
    if not isinstance(value, dict):
        raise ValidationFailed(f"{key}: must map marker names to points.")
    unknown = sorted(set(value) - set(MARKERS))
    if unknown:
        raise ValidationFailed(f"{key}: unknown marker(s) {', '.join(unknown)}; known: {', '.join(MARKERS)}.")
    for name, points in value.items():
        if isinstance(points, bool) or not isinstance(points, int) or not -100 <= points <= 100:
            raise ValidationFailed(f"{key}.{name}: must be an integer from -100 to 100.")
    return value


def weights_for(bot) -> dict[str, int]:
    overrides = (bot.configuration or {}).get("score_weights") or {}
    weights = default_weights()
    # Stored configurations were validated on write; a stale unknown key is ignored.
    weights.update({k: v for k, v in overrides.items() if k in MARKERS and isinstance(v, int)})
    return weights


# --- the text detector ----------------------------------------------------------
_AMOUNT = r"(?:(?:₹|rs\.?|inr|\$|usd|€|eur|£)\s?)?\d[\d,]*(?:\.\d+)?\s?(?:k|lakhs?|lacs?|crores?|cr|l)?\b"
# An amount that is unmistakably money: a currency before it or k/lakh/crore after it.
_MONEY = (
    r"(?:(?:₹|rs\.?|inr|\$|usd|€|eur|£)\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:k|lakhs?|lacs?|crores?|cr))?"
    r"|\d[\d,]*(?:\.\d+)?(?:\s?-\s?\d[\d,]*(?:\.\d+)?)?\s?(?:k|lakhs?|lacs?|crores?|cr))\b"
)
_TIME_UNITS = r"(?:seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|yrs?|am|pm|times?|percent|%)"
_UNITS = (
    r"units?|pieces?|pcs|nos|items|licen[cs]es?|seats|boxes|cartons|cases|kgs?|tons|tonnes|litres|liters|bags"
    r"|sets|pairs|copies|rolls|sheets|bottles|packs|packets|devices|laptops|machines|vehicles|sq\.? ?ft"
    r"|square feet|acres|metres|meters|desks|chairs|subscriptions|accounts|modules|panels|cameras|bulbs"
)
_NUMBER_WORDS = r"\d[\d,]*|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|fifty|hundred"
_WEEKDAYS_MONTHS = (
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend|tomorrow|january|february|march|april"
    r"|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec"
    r"|diwali|pongal|christmas|new year|q[1-4]"
)
_PERIOD = r"days?|weeks?|months?|quarters?"

_PATTERNS: dict[str, tuple[str, ...]] = {
    "purchase_intent": (
        r"\b(?:want|wants|wanted|need|needs|like|love|plan|planning|looking|ready|going|keen|intend|intending|hoping"
        r"|wish|wishing)"
        r" (?:to|on) (?:buy|purchase|order|book|subscribe|sign up|hire|rent|lease|get a quote|place an order"
        r"|go ahead|proceed|install|upgrade|switch)\b",
        r"\binterested in (?:buying|purchasing|ordering|booking|getting|hiring|subscribing|your|the|a|an|this)\b",
        r"\bhow (?:to|(?:do|can|could) (?:i|we)) (?:buy|order|purchase|book|pay|sign up|subscribe|get started)\b",
        r"\bto (?:buy|purchase|order|book) (?:it|one|this|that|these|them)\b",
        r"\b(?:want|need|would like|'d like) (?:it|this|one|them|these) (?:installed|fitted|set up)\b",
        r"\b(?:send|give|share|email|mail) (?:me|us) (?:a |an |the |your )?(?:quote|quotation|proforma|estimate)\b",
        r"\b(?:place|placing) (?:an |the |my |our |a bulk )?order\b",
        r"\b(?:sign (?:me|us) up|i'?ll take (?:it|one|two|them|\d+)|let'?s (?:go ahead|proceed|do it))\b",
        r"\b(?:book|schedule|arrange) (?:a |an )?(?:demo|site visit|visit|consultation|test drive|appointment)\b",
        r"\bwe(?:'re| are) (?:buying|purchasing|ordering|shortlisting)\b",
    ),
    "budget": (
        r"\b(?:my|our|the) budget (?:is|was|would be|will be|of|for|around|about|roughly|can|allows|limit|cap"
        r"|range|tops out|:)(?:\s*(?:is|around|about|roughly|approx\.?|up to|upto|under|max|only))*"
        r"(?:\s*" + _AMOUNT + ")?",
        r"\bbudget(?:\s*(?:is|was|would be|will be|of|around|about|roughly|approx\.?|up to|upto|under|max(?:imum)?"
        r"|only|:))+\s*" + _AMOUNT,
        r"\bwithin (?:my|our|a|the|your) budget\b",
        r"\b(?:can|could|willing to|able to|ready to|planning to) (?:spend|afford|pay|invest)"
        r"(?:\s+(?:up to|upto|around|about|max(?:imum)?|at most|only))?(?:\s*" + _AMOUNT + ")?",
        r"\b(?:up to|upto|under|below|less than|not more than|max(?:imum)? of) "
        + _AMOUNT
        + r"(?= (?:budget|max|tops))",
        _AMOUNT + r" (?:budget|max(?:imum)?|tops)\b",
        r"\bprice range (?:of |is |around )?" + _AMOUNT,
        r"\b(?:under|below|within|less than|not more than|not above|max(?:imum)?|up to|upto) " + _MONEY,
        r"\bbudget\b[^.!?\n]{0,40}?" + _MONEY,
    ),
    "quantity": (
        r"\b(?:" + _NUMBER_WORDS + r"|a dozen|dozens of|hundreds of|thousands of)\s+(?:" + _UNITS + r")\b",
        r"\bfor (?:a team of |about |around |roughly |approximately |our |my )?(?:" + _NUMBER_WORDS + r")"
        r"\s+(?:people|persons|employees|staff|members|students|users|guests|branches|offices|stores|outlets|rooms)\b",
        r"\b(?:bulk|wholesale|volume) (?:orders?|purchases?|pricing|prices?|discounts?|quantit(?:y|ies)|deals?|buy)\b",
        r"\bin bulk\b",
        r"\b(?:team|startup|company|office|family|group|batch|class|staff|crew) of "
        r"(?:about |around |roughly )?(?:" + _NUMBER_WORDS + r")\b",
        r"\b(?:of|for) (?:" + _NUMBER_WORDS + r") (?!" + _TIME_UNITS + r"\b)[a-z]+s\b",
        r"\b(?:have|with|across|in) (?:about |around )?(?:" + _NUMBER_WORDS + r") (?:offices|branches|stores|outlets"
        r"|locations|sites|employees|staff|rooms|floors|buildings|schools|clinics|shops|warehouses|factories)\b",
        # A number right after asking for something: "need 2 more", "order 30 of these", "buy 5 chairs".
        r"\b(?:need|needs|want|wants|order|buy|get|require|purchase|take)\b(?:\W+\w+){0,2}?\W+"
        r"(?:about |around |roughly )?(?:" + _NUMBER_WORDS + r")\s+(?:more\b|extra\b|of (?:these|those|them|it)\b"
        r"|of the (?:\w+ )?ones\b|(?!" + _TIME_UNITS + r"\b)(?:[a-z]+ ){0,2}[a-z]+s\b)",
        r"\b(?:qty|quantity)\s*(?:of|:|=|is|will be)?\s*\d[\d,]*",
    ),
    "timeline": (
        r"\b(?:by|before|within|in)\s+(?:the\s+)?(?:next\s+)?(?:\d+|a|one|two|three|four|five|six|few|couple of)\s+"
        r"(?:" + _PERIOD + r")\b",
        r"\b(?:by|before|until|till)\s+(?:next\s+|this\s+|the\s+end\s+of\s+(?:the\s+|this\s+|next\s+)?"
        r"|end\s+of\s+(?:the\s+|this\s+|next\s+)?)?(?:" + _WEEKDAYS_MONTHS + r"|week|month|quarter|year)\b",
        r"\b(?:need|want|buy|order|start|plan|planning|deliver|delivery|delivered|install|installed|move|moving"
        r"|launch|live|shift|book|purchase|begin|ready|looking|come|visit|available|free)\b(?:\W+\w+){0,5}?\W+"
        r"(?:(?:next|this|coming)\s+(?:week|month|quarter|weekend|year|" + _WEEKDAYS_MONTHS + r")|tomorrow)\b",
        r"\b(?:next|this|coming)\s+(?:week|month|quarter)\s+(?:itself|latest|at the latest)\b",
        r"\b(?:by|before|until|till)\s+(?:the\s+)?\d{1,2}(?:st|nd|rd|th)\b",
    ),
    "urgency": (
        r"\b(?:urgent(?:ly)?|asap|a\.s\.a\.p|as soon as possible|immediately|right away|at the earliest"
        r"|emergency|today itself|by today|by tonight|time[- ]sensitive|no time to lose|in a hurry)\b",
        r"\b(?:need|want|required|must have)\b(?:\W+\w+){0,4}?\W+(?:today|tomorrow|tonight|right now)\b",
    ),
    "price_question": (
        r"\bhow much (?:is|are|does|do|will|would|for|it|to|should|money|would it|per)\b",
        r"\bhow much\s*\?",
        r"\bwhat(?:'s| is| are| would be| will be| were)? (?:the |your |its |their )?(?:total )?(?:price|prices"
        r"|pricing|cost|costs|rate|rates|charges?|fees?|tariff|quote)\b",
        r"\b(?:price|prices|pricing|cost|costs|rates?|charges?|fees?|quote|quotation|tariff|emi|discount|discounts"
        r"|offers?|instal+ments?|financing|payment plans?)\b[^.!?\n]{0,50}\?",
        r"\b(?:any|do you (?:have|offer|give)) (?:discounts?|offers?|deals?|emi|instal+ments?|financing|coupons?)\b",
        r"\b(?:send|share|give|email|mail) (?:me |us )?(?:the |your |a )?(?:price list|pricing|rate card|quote"
        r"|quotation)\b",
        r"\b(?:price|cost|rate) (?:of|for) (?:the |a |an |one |this |your )?[\w -]{1,30}\?",
        r"\b(?:tell|know|share|give|quote|send)\s+(?:me\s+|us\s+)?(?:the\s+|your\s+)?(?:best\s+)?(?:rates?|price"
        r"|prices|cost|pricing|charges?)\b",
        r"\b(?:best|final|lowest|discounted) (?:price|rate|offer|deal)\b",
    ),
    "availability_question": (
        r"\b(?:is|are) (?:it|this|that|they|these|those|the [\w -]{1,30}?|your [\w -]{1,30}?) (?:still )?"
        r"(?:available|in stock|back in stock|ready for delivery)\b",
        r"\b(?:do|does|can) (?:you|they|your team) (?:have|stock|carry|sell|deliver|ship|service|serve|cover"
        r"|operate|install|come)\b[^.!?\n]{0,60}\?",
        r"\b(?:available|availability|in stock|out of stock|back in stock|stock)\b[^.!?\n]{0,40}\?",
        r"\b(?:still )?open for (?:enrol+ments?|admissions?|bookings?|orders|registrations?|applications)\b",
        r"\bwhen (?:will|is|are|does|can|would) (?:it|this|they|the [\w ]{1,20}?) (?:be )?(?:available|back"
        r"|in stock|restocked|delivered|shipped)\b",
        r"\b(?:any|free|open) (?:slots?|appointments?|openings|dates)\b[^.!?\n]{0,40}\?",
        r"\b(?:slots?|appointments?|dates|openings)\b[^.!?\n]{0,30}\b(?:free|available|open)\b[^.!?\n]{0,30}\?",
        r"\bwhen (?:can|could|will|would) (?:you|your [\w ]{1,20}?|the [\w ]{1,20}?|someone) (?:come|visit|start"
        r"|deliver|install|ship)\b",
    ),
}
_COMPILED = {marker: [re.compile(p, re.IGNORECASE) for p in patterns] for marker, patterns in _PATTERNS.items()}

# Phrases that look like a marker and are not one; blanked out before matching.
_IDIOMS = re.compile(
    r"price of (?:tea|rice|fish|onions) in \w+|priceless|at any cost|at all costs|cost (?:me|us) (?:my|our) \w+"
    r"|pays? the bills|not (?:cheap|bad)|how much i love|how much we love|how much (?:fun|time|effort|longer"
    r"|more|better|data|memory|space)",
    re.IGNORECASE,
)
_CLAUSE_BREAK = re.compile(r"[.!?;,:\n]|\b(?:but|however|though|although|except)\b", re.IGNORECASE)
_NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|neither|nor|without|hardly|dont|doesnt|didnt|wont|cant|cannot|isnt|arent"
    r"|wasnt|werent|shouldnt|wouldnt|couldnt)\b|n't\b",
    re.IGNORECASE,
)
# "not sure how much it costs" asks the question; the doubt is not a negation of it.
_EPISTEMIC = re.compile(r"^\s*(?:know|sure|understand|remember|certain|clear|mind|yet)\b", re.IGNORECASE)
NEGATION_WINDOW_WORDS = 4


def _negated(text: str, start: int) -> bool:
    before = text[:start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause = before[breaks[-1].end() :] if breaks else before
    words = list(re.finditer(r"[\w']+", clause))[-NEGATION_WINDOW_WORDS:]
    for word in words:
        negation = _NEGATION.fullmatch(word.group(0)) or word.group(0).lower().endswith("n't")
        if negation and not _EPISTEMIC.match(clause[word.end() :]):
            return True
    return False


def _evidence(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[: MAX_EVIDENCE_CHARS - 1] + "…"


def detect_markers(text: str) -> dict[str, str]:
    """{marker: the words that triggered it} for the text markers found in one message."""
    if not text:
        return {}
    # Same length as the original: positions (and evidence) stay aligned.
    cleaned = _IDIOMS.sub(lambda m: " " * len(m.group(0)), text)
    found: dict[str, str] = {}
    for marker, patterns in _COMPILED.items():
        for pattern in patterns:
            match = next((m for m in pattern.finditer(cleaned) if not _negated(cleaned, m.start())), None)
            if match is not None:
                found[marker] = _evidence(text[match.start() : match.end()])
                break
    return found


# --- the score ------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreLine:
    marker: str
    points: int
    evidence: str
    message_id: int | None = None

    def as_json(self) -> dict:
        return {"marker": self.marker, "points": self.points, "evidence": self.evidence}


@dataclass(frozen=True)
class Score:
    total: int
    lines: tuple[ScoreLine, ...]

    @property
    def breakdown(self) -> list[dict]:
        return [line.as_json() for line in self.lines]


def score_compute(
    *,
    weights: dict[str, int],
    messages: Iterable[tuple[int | None, str]],
    user_message_count: int,
    engagement_messages: int,
    visits: int,
    email: bool,
    phone: bool,
    name: bool,
    area: tuple[str, float] | None,
) -> Score:
    """The score of a lead from what the visitor wrote and what is known of them.

    ``messages`` are (message id, text) in the order they were written; a text
    marker's line quotes the first message that fired it. ``area`` is (name,
    distance km) when the lead is inside a service area.
    """
    lines: list[ScoreLine] = []
    fired: dict[str, ScoreLine] = {}
    for message_id, text in messages:
        for marker, evidence in detect_markers(text).items():
            if marker not in fired:
                fired[marker] = ScoreLine(marker, weights[marker], evidence, message_id)
    lines.extend(fired[m] for m in TEXT_MARKERS if m in fired)
    if user_message_count >= engagement_messages:
        lines.append(ScoreLine("engagement", weights["engagement"], f"{user_message_count} messages"))
    if visits >= 2:
        lines.append(ScoreLine("return_visit", weights["return_visit"], f"{visits} conversations"))
    present = [label for label, ok in (("e-mail", email), ("phone", phone), ("name", name)) if ok]
    if present:
        share = 0.4 * email + 0.4 * phone + 0.2 * name
        points = round(weights["contact_completeness"] * share)
        lines.append(ScoreLine("contact_completeness", points, ", ".join(present)))
    if area is not None:
        area_name, distance = area
        lines.append(ScoreLine("in_service_area", weights["in_service_area"], f"{area_name} ({distance:.1f} km)"))
    # A marker weighted 0 by the bot's owner does not count and is not shown.
    lines = [line for line in lines if line.points != 0]
    total = max(0, min(100, sum(line.points for line in lines)))
    return Score(total=total, lines=tuple(lines))
