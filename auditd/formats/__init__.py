"""File formats: what auditd reads and writes besides the API.

- `items`: one definition of an action as a file carries it (fixtures and imports alike).
- `ndjson`: auditd's export (NDJSON and CSV) and its import.
- `fixtures`: fixture files and seed bodies (a JSON array, one object, or NDJSON).
"""
