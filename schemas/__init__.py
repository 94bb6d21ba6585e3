"""The public contract of the approvals service.

The msgspec Structs here are the stored events, the NATS payloads and the HTTP bodies: one
schema everywhere. JSON Schema for every message is generated from them
(``approvals schema export DIR``) and committed under ``schemas/json``.
"""
