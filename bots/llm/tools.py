"""The tool registry shared by every provider, and the safe execution of a tool call.

A tool is a :class:`ToolSpec`: a JSON-schema description the model sees and a sync
handler (tools touch the ORM) that runs in Django's sync thread
(``database_sync_to_async``, i.e. ``sync_to_async(thread_sensitive=True)``). Tools that change
data (``writes=True``) or read an owner's private data (``owner_only=True``) are never
offered to an anonymous visitor, and a call to a tool that was not offered is refused
whatever the model says.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from bots.llm.types import ToolCall
from chatbase.core.errors import ChatbaseError

logger = logging.getLogger(__name__)

# Both OpenAI and Anthropic accept this shape of tool name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SUMMARY_CHARS = 200


@dataclass(frozen=True)
class ToolContext:
    """Who a tool runs for. ``owner`` is None for an anonymous visitor."""

    bot: Any
    conversation_id: int | None = None
    owner: Any | None = None
    visitor_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    # JSON schema of the arguments: an object with "properties" and "required".
    parameters: dict
    writes: bool
    # handler(context: ToolContext, **arguments) -> dict | str
    handler: Callable[..., dict | str]
    # Reads an owner's private data (their CRM, their rules): never offered to a visitor either.
    owner_only: bool = False

    @property
    def offered_to_visitors(self) -> bool:
        return not (self.writes or self.owner_only)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"Tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'.")
        if self.parameters.get("type", "object") != "object":
            raise ValueError(f"Tool {self.name!r}: parameters must be a JSON schema of type 'object'.")


@dataclass(frozen=True)
class ToolOutcome:
    """A tool call's result as the model will read it."""

    content: str
    summary: str
    is_error: bool


_registry: dict[str, ToolSpec] = {}
_registry_lock = threading.Lock()


def register(spec: ToolSpec) -> ToolSpec:
    """Add a tool. Registering the same handler again (a module re-import) is harmless."""
    with _registry_lock:
        existing = _registry.get(spec.name)
        if existing is not None and _qualname(existing.handler) != _qualname(spec.handler):
            raise ValueError(f"A different tool is already registered as {spec.name!r}.")
        _registry[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    with _registry_lock:
        _registry.pop(name, None)


def get(name: str) -> ToolSpec | None:
    return _registry.get(name)


def all_specs() -> list[ToolSpec]:
    with _registry_lock:
        return sorted(_registry.values(), key=lambda spec: spec.name)


def may_use(spec: ToolSpec, context: ToolContext | None) -> bool:
    if context is None:
        return False
    return spec.offered_to_visitors or context.owner is not None


def specs_for(context: ToolContext) -> list[ToolSpec]:
    """The tools this context may be offered: never a writing tool for an anonymous visitor."""
    return [spec for spec in all_specs() if may_use(spec, context)]


def _qualname(handler: Callable) -> str:
    return f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', repr(handler))}"


# --- argument validation ----------------------------------------------------------
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _type_ok(value: Any, expected: str | list[str]) -> bool:
    if isinstance(expected, list):
        return any(_type_ok(value, one) for one in expected)
    if expected == "null":
        return value is None
    python_types = _TYPES.get(expected)
    if python_types is None:
        return True
    # bool is an int in Python, never in JSON schema.
    if isinstance(value, bool) and expected in {"integer", "number"}:
        return False
    if expected == "integer" and isinstance(value, float) and value.is_integer():
        return True
    return isinstance(value, python_types)


def validate_arguments(spec: ToolSpec, arguments: Any) -> tuple[dict, list[str]]:
    """(the arguments to pass, problems). Minimal: required keys, types, enum, bounds.

    Keys the schema does not declare are dropped (or refused when the schema sets
    ``additionalProperties: false``), so that a handler never gets an unexpected keyword.
    """
    if not isinstance(arguments, dict):
        return {}, ["arguments must be a JSON object"]
    properties: dict = spec.parameters.get("properties", {})
    problems: list[str] = []
    for key in spec.parameters.get("required", []):
        if key not in arguments or arguments[key] is None:
            problems.append(f"'{key}' is required")
    cleaned: dict = {}
    for key, value in arguments.items():
        schema = properties.get(key)
        if schema is None:
            if spec.parameters.get("additionalProperties") is False:
                problems.append(f"'{key}' is not an argument of {spec.name}")
            continue
        expected = schema.get("type")
        if expected is not None and not _type_ok(value, expected):
            problems.append(f"'{key}' must be of type {expected}")
            continue
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"'{key}' must be one of {schema['enum']}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(f"'{key}' must be at least {schema['minimum']}")
                continue
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(f"'{key}' must be at most {schema['maximum']}")
                continue
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                problems.append(f"'{key}' must not be empty" if schema["minLength"] == 1 else f"'{key}' is too short")
                continue
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"'{key}' must be at most {schema['maxLength']} characters")
                continue
        if expected == "integer" and isinstance(value, float):
            value = int(value)
        cleaned[key] = value
    return cleaned, problems


# --- execution --------------------------------------------------------------------
def summarize(result: dict | str) -> str:
    """A one-line account of a tool result, for logs and the ToolCalled event."""
    if isinstance(result, dict):
        if "error" in result:
            return f"error: {result['error']}"[:SUMMARY_CHARS]
        for key in ("results", "items"):
            if isinstance(result.get(key), list):
                count = len(result[key])
                return f"{count} result{'s' if count != 1 else ''}"
        text = json.dumps(result, default=str)
    else:
        text = str(result)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _error(message: str) -> ToolOutcome:
    summary = f"error: {message}"[:SUMMARY_CHARS]
    return ToolOutcome(content=json.dumps({"error": message}), summary=summary, is_error=True)


async def execute(
    call: ToolCall,
    *,
    context: ToolContext | None,
    offered: Iterable[ToolSpec],
    invalid_json: bool = False,
) -> ToolOutcome:
    """Run one tool call. Never raises for the model's mistakes: they become error results."""
    spec = next((s for s in offered if s.name == call.name), None)
    if spec is None or not may_use(spec, context):
        return _error(f"The tool '{call.name}' is not available here.")
    if invalid_json:
        return _error("The arguments were not valid JSON.")
    arguments, problems = validate_arguments(spec, call.arguments)
    if problems:
        return _error(f"Invalid arguments for {spec.name}: " + "; ".join(problems) + ".")
    try:
        # asgiref's SyncToAsync (thread_sensitive: Django's one sync thread) that also
        # closes stale database connections around the call, as consumers do.
        result = await database_sync_to_async(spec.handler)(context, **arguments)
    except ChatbaseError as exc:
        return _error(exc.detail)
    except Exception:
        logger.exception("Tool %s failed", spec.name)
        return _error(f"The tool '{spec.name}' failed.")
    content = result if isinstance(result, str) else json.dumps(result, default=str)
    return ToolOutcome(content=content, summary=summarize(result), is_error=False)
