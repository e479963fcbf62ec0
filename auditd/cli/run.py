"""`auditd run -- CMD ARGS...`: run a command as an audited action.

It records an action (In progress), passes the command's stdout and stderr through to its own and
ships them as log lines while the command runs, and ends the action Success or Failed by the exit
code, exiting with that code. A cancel (the action becomes Canceling, seen on the events stream, or
by polling when the stream is unavailable) sends the command SIGTERM (SIGKILL after --kill-after
seconds) and ends the action Canceled. Address and credentials come from flags or from the
DOCKERCLOUD_* variables the docker-cloud CLI reads.
"""
import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import time

import aiohttp

from .. import __version__

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_SETUP = 125          # auditd run itself could not start (as env(1) does)
EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 126, 127
FLUSH_LINGER = 0.05       # a burst of output gathers this long into one request (well under 0.2 s)
MAX_BATCH = 1000          # lines per request
MAX_LINE_BYTES = 64 * 1024
MAX_PATH = 4096
POLL_INTERVAL = 1.0       # cancel polling when the events stream is unavailable
PIPE_GRACE = 1.0          # after the command exits, how long a leftover child may hold its pipes
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


class RunnerError(Exception):
    """auditd run cannot go on; the message says what to fix."""


def register_commands(commands):
    run = commands.add_parser(
        "run", help="run a command as an audited action, its output as the action's logs",
        description="Record an action for a command, stream its stdout and stderr as the "
                    "action's log lines, end it Success or Failed by the exit code and exit with "
                    "that code. A cancel of the action sends the command SIGTERM and ends it "
                    "Canceled. Needs a producer or admin API key.",
        epilog="Example: auditd run --action 'Database Backup' -- pg_dump -f backup.sql shop")
    run.add_argument("--url", help="auditd's address (default: $DOCKERCLOUD_REST_HOST, else "
                                   f"{DEFAULT_URL})")
    run.add_argument("--user", help="user name (default: $DOCKERCLOUD_USER)")
    run.add_argument("--apikey", help="API key (default: $DOCKERCLOUD_APIKEY)")
    run.add_argument("--namespace", help="namespace of the action (default: "
                                         "$DOCKERCLOUD_NAMESPACE, else the user's own)")
    run.add_argument("--action", default="Command Run",
                     help="the action's name (default: %(default)s)")
    run.add_argument("--object", default="", metavar="URI",
                     help="resource URI the command acts on, e.g. /api/app/v1/service/ID/")
    run.add_argument("--parent", action="append", default=[], metavar="URI",
                     help="a parent of --object, nearest first (repeatable)")
    run.add_argument("--kill-after", type=float, default=10.0, metavar="SECONDS",
                     help="after a cancel, SIGKILL the command if SIGTERM has not stopped it "
                          "within this time (default: %(default)s)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the command to run")
    run.set_defaults(func=main)


def main(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("auditd run: no command given: auditd run [options] -- CMD ARGS...", file=sys.stderr)
        return 2
    try:
        return asyncio.run(Run(args, argv).main())
    except RunnerError as err:
        print(f"auditd run: {err}", file=sys.stderr)
        return EXIT_SETUP


def _say(message: str):
    print(f"auditd run: {message}", file=sys.stderr, flush=True)


def authorization(args, env=os.environ) -> str:
    """The Authorization header, chosen as the docker-cloud CLI does (DOCKERCLOUD_AUTH verbatim
    unless flags name the user or key)."""
    if env.get("DOCKERCLOUD_AUTH") and not (args.user or args.apikey):
        return env["DOCKERCLOUD_AUTH"]
    user = args.user or env.get("DOCKERCLOUD_USER")
    key = args.apikey or env.get("DOCKERCLOUD_APIKEY")
    if not user or not key:
        raise RunnerError("no credentials: give --user and --apikey, or set DOCKERCLOUD_USER and "
                          "DOCKERCLOUD_APIKEY (a producer or admin key)")
    return aiohttp.BasicAuth(user, key).encode()


def _stream_url(args, rest: str, env=os.environ) -> str:
    stream = None if args.url else env.get("DOCKERCLOUD_STREAM_HOST")
    if not stream:
        stream = rest
    return stream.rstrip("/") + "/api/audit/v1/events/"


class LogShipper:
    """Queues lines and posts them in order, a batch at a time, while the command runs."""

    def __init__(self, post):
        self.post = post
        self.pending: list[dict] = []
        self.more = asyncio.Event()
        self.closing = False
        self.task = asyncio.create_task(self._run())

    def add(self, stream_type: str, line: str):
        self.pending.append({"log": line, "timestamp": int(time.time()),
                             "streamType": stream_type})
        self.more.set()

    async def _run(self):
        while True:
            await self.more.wait()
            if not self.closing:
                await asyncio.sleep(FLUSH_LINGER)
            self.more.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                await self.post(batch)
            if self.closing:
                return

    async def close(self):
        self.closing = True
        self.more.set()
        await self.task


def _decode(raw: bytes) -> str:
    line = raw.decode("utf-8", errors="replace")
    return line[:-1] if line.endswith("\r") else line


async def _pump(stream: asyncio.StreamReader, stream_type: str, echo, shipper: LogShipper):
    """Copy the command's output to `echo` as it comes, and ship it line by line."""
    buffered = b""
    while chunk := await stream.read(65536):
        echo.write(chunk)
        echo.flush()
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            shipper.add(stream_type, _decode(line))
        while len(buffered) > MAX_LINE_BYTES:   # a line too long for one log line is split
            shipper.add(stream_type, _decode(buffered[:MAX_LINE_BYTES]))
            buffered = buffered[MAX_LINE_BYTES:]
    if buffered:
        shipper.add(stream_type, _decode(buffered))


class Run:
    def __init__(self, args, argv):
        self.args, self.argv = args, argv
        self.rest = (args.url or os.environ.get("DOCKERCLOUD_REST_HOST") or DEFAULT_URL).rstrip("/")
        self.events_url = _stream_url(args, self.rest)
        self.auth = authorization(args)
        self.namespace = args.namespace or os.environ.get("DOCKERCLOUD_NAMESPACE")
        self.uuid = None
        self.cancel_requested = asyncio.Event()
        self.lost_lines = 0

    @property
    def action_path(self) -> str:
        return f"/api/audit/v1/action/{self.uuid}/"

    async def main(self) -> int:
        headers = {"Authorization": self.auth, "User-Agent": f"auditd-run/{__version__}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            self.session = session
            await self.record()
            _say(f"action {self.uuid} ({self.args.action}); follow it with: "
                 f"docker-cloud action logs -f {self.uuid}")
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            except OSError as err:
                code = EXIT_NOT_FOUND if isinstance(err, FileNotFoundError) \
                    else EXIT_CANNOT_EXECUTE
                message = f"cannot run {self.argv[0]!r}: {err.strerror or err}"
                _say(message)
                await self.post_logs([{"log": f"auditd run: {message}", "streamType": "stderr"}])
                await self.finish("Failed", code)
                return code
            return await self.supervise(process)

    async def supervise(self, process) -> int:
        loop = asyncio.get_running_loop()
        # In a terminal, Ctrl-C reaches the command directly; a SIGTERM to auditd run is passed on.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        loop.add_signal_handler(signal.SIGTERM, lambda: process.send_signal(signal.SIGTERM))
        shipper = LogShipper(self.post_logs)
        pumps = [asyncio.create_task(_pump(process.stdout, "stdout", sys.stdout.buffer, shipper)),
                 asyncio.create_task(_pump(process.stderr, "stderr", sys.stderr.buffer, shipper))]
        watcher = asyncio.create_task(self.watch_for_cancel())
        exited = asyncio.create_task(process.wait())
        canceled = asyncio.create_task(self.cancel_requested.wait())
        try:
            await asyncio.wait({exited, canceled}, return_when=asyncio.FIRST_COMPLETED)
            was_canceled = canceled.done() and not exited.done()
            if was_canceled:
                _say("the action was canceled: sending the command SIGTERM")
                process.send_signal(signal.SIGTERM)
                done, _ = await asyncio.wait({exited}, timeout=self.args.kill_after)
                if not done:
                    _say(f"still running after {self.args.kill_after:g}s: sending SIGKILL")
                    process.kill()
            returncode = await exited
            # A child the command left behind may still hold the pipes: do not wait for it long.
            _, stuck = await asyncio.wait(pumps, timeout=PIPE_GRACE)
            for task in stuck:
                task.cancel()
        finally:
            for task in (watcher, canceled):
                task.cancel()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        code = returncode if returncode >= 0 else 128 - returncode
        if was_canceled:
            state = "Canceled"
        else:
            state = "Success" if returncode == 0 else "Failed"
        if returncode != 0:
            how = (f"was killed by {signal.Signals(-returncode).name}" if returncode < 0
                   else f"exited with code {returncode}")
            shipper.add("stderr", f"auditd run: the command {how}")
        await shipper.close()
        await self.finish(state, code)
        return code

    # -- talking to auditd

    async def _request(self, method: str, path: str, **kw):
        try:
            async with self.session.request(method, self.rest + path, timeout=REQUEST_TIMEOUT,
                                            **kw) as resp:
                text = await resp.text()
                return resp.status, text
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise RunnerError(f"cannot reach auditd at {self.rest} ({err or type(err).__name__}): "
                              "start it with 'auditd serve', or set --url or "
                              "DOCKERCLOUD_REST_HOST") from None

    async def record(self):
        body = {"action": self.args.action, "object": self.args.object,
                "path": shlex.join(self.argv)[:MAX_PATH], "state": "In progress",
                "body": {"argv": self.argv, "cwd": os.getcwd(), "host": socket.gethostname()},
                # a retry from the API could only record a Pending action nobody runs
                "can_be_retried": False}
        if self.args.parent:
            body["parents"] = self.args.parent
        if self.namespace:
            body["namespace"] = self.namespace
        status, text = await self._request("POST", "/api/audit/v1/action/", json=body)
        if status == 201:
            self.uuid = json.loads(text)["uuid"]
            return
        if status == 401:
            raise RunnerError(f"{self.rest} refused the credentials (401): check --user/--apikey "
                              "or DOCKERCLOUD_USER/DOCKERCLOUD_APIKEY")
        if status == 403:
            raise RunnerError(f"this user may not record actions (403): auditd run needs a "
                              f"producer or admin key ({_error_of(text)})")
        raise RunnerError(f"recording the action failed: {status} {_error_of(text)}")

    async def post_logs(self, lines: list[dict]):
        """Post one batch; retried a few times, then counted as lost (the command goes on)."""
        for attempt, pause in enumerate((0.2, 0.5, 1.0, None)):
            try:
                status, text = await self._request("POST", self.action_path + "logs/", json=lines)
            except RunnerError as err:
                status, text = None, str(err)
            if status == 201:
                return
            if pause is None or (status is not None and status < 500 and status != 429):
                break
            await asyncio.sleep(pause)
        if not self.lost_lines:
            _say(f"log lines could not be recorded ({status or ''} {_error_of(text)}); the "
                 "command goes on")
        self.lost_lines += len(lines)

    async def state(self) -> str | None:
        status, text = await self._request("GET", self.action_path)
        return json.loads(text).get("state") if status == 200 else None

    async def finish(self, state: str, code: int):
        try:
            status, text = await self._request("PATCH", self.action_path, json={"state": state})
        except RunnerError as err:
            _say(f"could not set the action {state}: {err}")
            return
        if status != 200:
            _say(f"could not set the action {state}: {status} {_error_of(text)}")
            return
        lost = f"; {self.lost_lines} log lines were lost" if self.lost_lines else ""
        _say(f"action {self.uuid} {state} (exit code {code}){lost}")

    async def watch_for_cancel(self):
        """Set `cancel_requested` once the action is Canceling: from the events stream while it
        is up, else by polling the action."""
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with self.session.ws_connect(self.events_url, heartbeat=20,
                                               params={"object": self.action_path}) as ws:
                await ws.receive()         # {"type": "auth"}: subscribed from here on
                if await self._canceling(await self.state()):
                    return
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    if (event.get("resource_uri") == self.action_path
                            and await self._canceling(event.get("state"))):
                        return
        while True:        # the stream is unavailable or was closed: poll
            with contextlib.suppress(RunnerError, ValueError):
                if await self._canceling(await self.state()):
                    return
            await asyncio.sleep(POLL_INTERVAL)

    async def _canceling(self, state) -> bool:
        if state in ("Canceling", "Canceled"):
            self.cancel_requested.set()
            return True
        return False


def _error_of(text: str) -> str:
    try:
        return str(json.loads(text).get("error", text))[:500]
    except (ValueError, AttributeError):
        return text[:500]
