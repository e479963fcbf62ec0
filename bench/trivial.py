"""The reference server: a trivial aiohttp handler returning short text, on the asyncio event loop.

This is the limit of one Python event loop on this machine; auditd's request rates are given as a
fraction of it. Run: python bench/trivial.py PORT
"""
import sys

from aiohttp import web


async def hello(request):
    return web.Response(text="ok")


async def hello_post(request):
    await request.read()
    return web.Response(text="ok", status=201)


def main():
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/", hello_post)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
