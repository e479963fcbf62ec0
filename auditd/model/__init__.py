"""The model: what an action is and the rules it follows, with no I/O.

Nothing here imports aiohttp or a database driver. Both storage backends and the HTTP API call
these functions; none of them copies a rule.

- `actions`: the states, the transition table, a new action's defaults, and the cancel, retry and
  state-change rules as pure functions.
- `access`: principals, roles, API keys and their hashes, which namespaces a caller sees.
- `document`: the Action as sent on the wire (CONTRACT.md section 2), rendered once per write.
- `query`: a validated list request and the page that answers it.
- `notes`: what a store reports after each commit; the live streams are fed from them.
- `dates`, `uris`, `errors`: wire dates, resource URIs, domain errors.
"""
