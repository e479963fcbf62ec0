"""A Python 3 client of the auditd API (the Docker Cloud Actions API plus auditd's producer API).

    from auditd.client import Client             # blocking
    with Client("http://127.0.0.1:8080", "admin", KEY) as api:
        action = api.record(action="Service Create", object="/api/app/v1/service/web/")
        for message in api.follow_logs(action["uuid"]):
            print(message["log"])

    from auditd.client import AsyncClient        # asyncio
    async with AsyncClient() as api:              # DOCKERCLOUD_REST_HOST/_USER/_APIKEY
        async for action in api.actions(state="Failed"):
            ...

It imports nothing of the server: a program that only talks to auditd needs aiohttp alone.
"""
from .aio import ApiError, AsyncClient, StreamClosed
from .sync import Client

__all__ = ["ApiError", "AsyncClient", "Client", "StreamClosed"]
