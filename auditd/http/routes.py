"""Every route of the server, in one place (CONTRACT.md section 1)."""
from aiohttp import web

from . import actions, console, openapi, ops, proofs, standin, streams
from .console import tickets


def setup_routes(app: web.Application):
    def add(method, path, handler):
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path.rstrip("/"), handler)   # no redirect without the slash

    for prefix in ("/api/audit/v1", "/api/audit/v1/{namespace}"):
        add("GET", prefix + "/action/", actions.list_actions)
        add("POST", prefix + "/action/", actions.record_action)
        add("GET", prefix + "/action/{uuid}/", actions.get_action)
        add("PATCH", prefix + "/action/{uuid}/", actions.change_state)
        add("POST", prefix + "/action/{uuid}/cancel/", actions.cancel_action)
        add("POST", prefix + "/action/{uuid}/retry/", actions.retry_action)
        add("GET", prefix + "/action/{uuid}/logs/", streams.action_logs)
        add("POST", prefix + "/action/{uuid}/logs/", actions.append_logs)
        add("GET", prefix + "/events/", streams.events)
        add("GET", prefix + "/action/{uuid}/proof/", proofs.proof)
    # tamper evidence (docs/TRANSPARENCY.md)
    add("GET", "/api/audit/v1/checkpoint/", proofs.checkpoint)
    add("POST", "/api/audit/v1/checkpoint/", proofs.sign_checkpoint)
    add("GET", "/api/audit/v1/checkpoint/consistency/", proofs.consistency)
    app.router.add_get(openapi.PATH, openapi.serve)   # the OpenAPI document, no credentials
    # go-dockercloud dials the log stream without /api
    add("GET", "/audit/v1/action/{uuid}/logs/", streams.action_logs)
    add("GET", "/audit/v1/{namespace}/action/{uuid}/logs/", streams.action_logs)

    # the stand-in's test helpers (admin only) and operations (no credentials)
    add("POST", "/_auditd/reset/", standin.reset)
    add("POST", "/_auditd/seed/", standin.seed)
    app.router.add_get(ops.HEALTH_PATH, ops.health)
    app.router.add_get(ops.METRICS_PATH, ops.metrics)

    # the web console: its page, files, and stream tickets
    app.router.add_get("/", console.root)
    app.router.add_get("/ui", console.to_console)
    app.router.add_get("/ui/", console.page)
    add("GET", "/ui/action/{uuid}/", console.page)
    app.router.add_get("/ui/static/{name}", console.static)
    app.router.add_post("/ui/api/ticket", tickets.issue)
