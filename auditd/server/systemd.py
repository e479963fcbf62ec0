"""The two systemd protocols auditd speaks, in plain socket code (no libsystemd).

- sd_notify: READY=1 once listening, STOPPING=1 at shutdown, WATCHDOG=1 every half of WatchdogSec,
  sent as datagrams to $NOTIFY_SOCKET (a path, or an abstract socket written with a leading '@').
- Socket activation: when $LISTEN_PID is this process, $LISTEN_FDS sockets start at fd 3.
Outside systemd none of these variables is set and every function here does nothing.
"""
import logging
import os
import socket

log = logging.getLogger("auditd.systemd")

LISTEN_FDS_START = 3


def notify(*messages: str, environ=None) -> bool:
    """Send `messages` (such as "READY=1") as one datagram; False when there is nobody to tell."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(messages).encode(), address)
        return True
    except OSError as err:
        log.warning("could not notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), err)
        return False


def watchdog_interval(environ=None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return value / 2 / 1_000_000 if value > 0 else None


def listen_sockets(environ=None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (none when not socket-activated).

    The variables are removed afterwards so that a child process never believes they are its."""
    environ = os.environ if environ is None else environ
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(variable, None)
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                                  socket.SO_ACCEPTCONN):
            raise OSError(f"file descriptor {fd} passed by systemd is not a listening stream "
                          "socket: use ListenStream= in auditd-api.socket")
        sock.setblocking(False)
        sockets.append(sock)
    return sockets
