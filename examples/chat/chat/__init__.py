"""A chat backend: WebSocket commands, conversations in Postgres, events shared through Valkey pub/sub.

Modules: ``settings`` (configuration), ``models`` (SQLAlchemy tables), ``store`` (persistence),
``providers`` (where AI replies come from), ``broadcast`` (events to every client of every
instance), ``protocol`` (the wire format), ``service`` (the commands), ``app`` (the FastAPI app).
docs/chat-example.md in testlane's repository walks through it and its tests.
"""
