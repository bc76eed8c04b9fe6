"""Tools that ship with ChatBase, registered when ``bots.llm`` is imported."""

from __future__ import annotations

from bots.llm.tools import ToolContext, ToolSpec, register

SEARCH_DEFAULT_K = 5


def search_knowledge(context: ToolContext, *, query: str, k: int = SEARCH_DEFAULT_K) -> dict:
    # Imported here: bots.selectors imports models and the embedding stack, which the
    # provider layer must not pull in at import time.
    from bots.selectors import chunk_search

    results = chunk_search(bot=context.bot, query=query, k=k)
    return {
        "results": [
            {
                "chunk_id": result.chunk_id,
                "document_id": result.document_id,
                "document_title": result.document_title,
                "text": result.text,
                "score": float(result.score),
            }
            for result in results
        ]
    }


SEARCH_KNOWLEDGE = register(
    ToolSpec(
        name="search_knowledge",
        description=(
            "Search this bot's documents (its knowledge base) and return the most relevant passages. "
            "Use it when the answer may be in the documents and the passages you already have do not contain it."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to look for, in a few words."},
                "k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10,
                    "description": f"How many passages to return (default {SEARCH_DEFAULT_K}).",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        writes=False,
        handler=search_knowledge,
    )
)
