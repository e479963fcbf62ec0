"""The HTTP API: `app.create_app(config)` builds the aiohttp application.

- `routes`: every route, in one place.
- `middleware`: credentials, errors as JSON, metrics, around every request.
- `actions`: the REST handlers of the Actions API and the producer API; `streams`: the WebSockets.
- `standin`: `/_auditd/reset`, `/_auditd/seed` and the stand-in start (fixtures, demo).
- `ops`: health and metrics. `requests` and `responses`: parsing and answering, shared.
"""
