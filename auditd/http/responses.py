"""How the API answers: JSON bodies, the Action with its URI header, and `{"error": ...}`."""
import json

from aiohttp import web

from ..model.uris import action_uri

ACTION_URI_HEADER = "X-DockerCloud-Action-URI"


def json_text(text: str, status: int = 200, headers=None) -> web.Response:
    """A JSON body already rendered as text."""
    return web.Response(text=text, status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def json_response(payload, status: int = 200, headers=None) -> web.Response:
    return json_text(json.dumps(payload), status, headers)


def action_response(action: dict, status: int) -> web.Response:
    """The stored Action document, and the header that points at it (every response that
    changes an action carries it)."""
    return json_text(action["doc"], status, {ACTION_URI_HEADER: action_uri(action["uuid"])})


def error_response(status: int, message: str, headers=None) -> web.Response:
    return json_response({"error": message}, status, headers)
