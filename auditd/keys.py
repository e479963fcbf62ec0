"""Typed keys for what the application and each request carry."""
from aiohttp import web

from .config import Config
from .geo import Locator
from .store import Principal, Store
from .streams import Streams

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
LOCATOR = web.AppKey("locator", Locator)
STREAMS = web.AppKey("streams", Streams)
PRINCIPAL = web.RequestKey("principal", Principal)   # the authenticated caller
