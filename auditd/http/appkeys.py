"""Typed keys for what the application and each request carry."""
from aiohttp import web

from ..config import Config
from ..geo import Locator
from ..model.access import Principal
from ..store import Store
from ..streams import Streams
from ..tasks.checkpoints import Checkpointer
from ..tasks.demo import Demo
from ..tasks.forward import Forwarder
from ..tasks.retention import Retention
from .bodyparser import BodyParser
from .limits import Limits
from .metrics import Metrics

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
LOCATOR = web.AppKey("locator", Locator)
STREAMS = web.AppKey("streams", Streams)
METRICS = web.AppKey("metrics", Metrics)
LIMITS = web.AppKey("limits", Limits)
BODY_PARSER = web.AppKey("body_parser", BodyParser)
DEMO = web.AppKey("demo", Demo)
RETENTION = web.AppKey("retention", Retention)
CHECKPOINTER = web.AppKey("checkpointer", Checkpointer)
FORWARDER = web.AppKey("forwarder", Forwarder)
TICKETS = web.AppKey("console_tickets", dict)   # stream ticket -> (expiry, Authorization)
PRINCIPAL = web.RequestKey("principal", Principal)   # the authenticated caller
CREDENTIALS = web.RequestKey("credentials", tuple)  # (user, key) of a stream's caller
