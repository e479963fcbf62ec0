"""systemd integration, exercised the way systemd does it: a real notify datagram socket, an
inherited listening socket at fd 3, and `systemd-analyze verify` on the shipped unit files."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from auditd.server import systemd
from conftest import ROOT, free_port

UNITS = ROOT / "systemd"
WAIT = 60      # upper bound for a message that should come at once; never a timing assertion


class Spawned:
    """`python -m auditd ARGS` (or another command) with stderr drained into `lines`."""

    def __init__(self, argv, env=None, **popen):
        self.lines, self.out_lines = [], []
        self.listening = threading.Event()
        self.proc = subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                     **popen)
        self._threads = [threading.Thread(target=self._drain, args=(s, keep), daemon=True)
                         for s, keep in ((self.proc.stderr, self.lines),
                                         (self.proc.stdout, self.out_lines))]
        for thread in self._threads:
            thread.start()

    @classmethod
    def serve(cls, db, *args, env=None, **popen):
        return cls([sys.executable, "-m", "auditd", "serve", "--db", str(db), *args], env,
                   **popen)

    def _drain(self, stream, keep):
        with stream:
            for line in stream:
                keep.append(line)
                if "listening on" in line:
                    self.listening.set()
        self.listening.set()     # also on exit, so a waiter never hangs on a dead process

    def wait_listening(self):
        assert self.listening.wait(WAIT) and self.proc.poll() is None, self.stderr

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=WAIT)
        for thread in self._threads:
            thread.join(timeout=WAIT)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def notify(tmp_path):
    """A factory of bound notify sockets, closed after the test: notify(abstract=False)."""
    made = []

    def make(abstract=False):
        made.append(notify_socket(tmp_path, abstract))
        return made[-1]
    yield make
    for sock, _ in made:
        sock.close()


def notify_socket(tmp_path, abstract=False):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"auditd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(WAIT)
    return sock, address


def receive(sock) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def get(url) -> int:
    with urllib.request.urlopen(url, timeout=WAIT) as resp:
        return resp.status


def test_ready_means_serving_and_stopping_is_sent_on_sigterm(tmp_path, notify):
    sock, address = notify()
    port = free_port()
    server = Spawned.serve(tmp_path / "a.db", "--port", str(port),
                           env={"NOTIFY_SOCKET": address})
    try:
        assert "READY=1" in receive(sock)
        # READY=1 is only sent once the port answers.
        assert get(f"http://127.0.0.1:{port}/_auditd/health") == 200
    finally:
        code = server.stop(signal.SIGTERM)
    assert "STOPPING=1" in receive(sock)
    assert code == 0, server.stderr


def test_abstract_notify_socket_gets_watchdog_pings_and_sigint_stops(tmp_path, notify):
    sock, address = notify(abstract=True)
    server = Spawned.serve(tmp_path / "b.db", "--port", str(free_port()),
                           env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
    try:
        assert "READY=1" in receive(sock)
        assert "WATCHDOG=1" in receive(sock)
        assert "WATCHDOG=1" in receive(sock)
    finally:
        code = server.stop(signal.SIGINT)
    messages = receive(sock)
    while "WATCHDOG=1" in messages:      # pings sent before the signal may still be queued
        messages = receive(sock)
    assert "STOPPING=1" in messages
    assert code == 0, server.stderr


# A stand-in for systemd's exec: put the socket at fd 3, say so in LISTEN_FDS/LISTEN_PID (the pid
# is this process's, which exec keeps), then become `python -m auditd ...`.
ACTIVATE = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="auditd-api.socket")
os.execv(sys.executable, [sys.executable, "-m", "auditd", *sys.argv[2:]])
"""


def test_serves_on_the_socket_systemd_passes(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    unused_port = free_port()
    server = Spawned([sys.executable, "-c", ACTIVATE, str(listener.fileno()), "serve",
                      "--db", str(tmp_path / "c.db"), "--port", str(unused_port)],
                     pass_fds=(listener.fileno(),))
    listener.close()      # only the server holds it now
    try:
        server.wait_listening()
        assert get(f"http://127.0.0.1:{port}/_auditd/health") == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unused_port), timeout=WAIT).close()
    finally:
        code = server.stop()
    assert code == 0, server.stderr
    assert "socket_activated=True" in server.stderr
    # The first-run banner points clients at the socket it serves on.
    assert f"DOCKERCLOUD_REST_HOST=http://127.0.0.1:{port}\n" in "".join(server.out_lines)


def test_sockets_meant_for_another_process_are_left_alone(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert systemd.listen_sockets() == []
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_unit_files_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd to run this)")
    # verify checks that ExecStart exists: point it at this checkout's auditd instead of the
    # install location /opt/auditd/bin/auditd; nothing else in the units changes.
    executable = Path(sys.executable).with_name("auditd")
    assert executable.exists(), "pip install -e . provides the auditd script next to python"
    units = []
    for unit in sorted(UNITS.glob("auditd-api.*")):
        text = unit.read_text()
        assert unit.suffix != ".service" or "ExecStart=/opt/auditd/bin/auditd serve" in text
        target = tmp_path / unit.name
        target.write_text(text.replace("/opt/auditd/bin/auditd", str(executable)))
        units.append(str(target))
    assert [Path(u).name for u in units] == ["auditd-api.service", "auditd-api.socket"]
    result = subprocess.run([tool, "verify", *units], capture_output=True, text=True,
                            timeout=WAIT, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Warnings (unknown keys, ordering cycles) do not change the exit code: none is accepted.
    assert "auditd-api" not in output and "cycle" not in output, output
