"""Writes of the bots app: `bots.services.bots` (bots, templates) and
`bots.services.documents` (documents and their ingestion)."""
