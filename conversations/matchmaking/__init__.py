"""Random matchmaking with an AI fallback (docs/matchmaking.md).

    /ws/match/ -> MatchConsumer -> queue (PostgreSQL, SKIP LOCKED) -> match.found | bot.connected

The waiting queue is a table every Daphne process shares; notifications between
processes go through the channel layer (low-rate events only, DESIGN.md 4a).
"""
