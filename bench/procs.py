"""Processes the benchmark starts: auditd servers, the trivial reference, users on a database."""
import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOG_DIR = Path(__file__).resolve().parent / "data" / "logs"


def compile_bytecode():
    """Byte-compile the benchmarked package, as `pip install` does for a deployed daemon: with
    PYTHONDONTWRITEBYTECODE set (some shells and CI images set it) every server start would
    otherwise compile ~100 modules from source again (~0.25 s of the start-up figure here)."""
    import compileall
    if not compileall.compile_dir(str(REPO / "auditd"), quiet=1):
        raise RuntimeError(f"could not byte-compile {REPO / 'auditd'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int, path: str = "/") -> bool:
    """True once an HTTP request to the port gets any response."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def rss_kb(pid: int, field: str = "VmRSS", descendants: bool = True) -> int:
    """A process's VmRSS (or another field of its status), plus its live descendants' (the
    writer process and its fork server, the body parser: their shared pages counted twice)."""
    total = _status_kb(pid, field)
    for child in _descendants(pid) if descendants else ():
        try:
            total += _status_kb(child, field)
        except (OSError, RuntimeError):   # it left meanwhile
            pass
    return total


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def basic(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


def cli(*args) -> str:
    """Run `python -m auditd ARGS`; its stdout (a key for `user add`)."""
    done = subprocess.run([PYTHON, "-m", "auditd", *args], cwd=REPO, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"auditd {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def ensure_user(db: Path, name: str, role: str) -> str:
    """A fresh key for `name` on `db`: rotated when the user exists, else created."""
    try:
        return cli("user", "rotate-key", name, "--db", str(db))
    except RuntimeError:
        return cli("user", "add", name, "--role", role, "--db", str(db))


class Server:
    """A server process on a free port; stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started_in = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, probe_path: str = "/", timeout: float = 60) -> float:
        """Start and wait until the port answers; returns the seconds that took."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / f"{self.name}.log", "ab")
        began = time.perf_counter()
        argv = [str(self.port) if a == "{port}" else a for a in self.argv]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env} if self.env else None)
        log.close()
        while not answers(self.port, probe_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: see "
                                   f"{LOG_DIR / (self.name + '.log')}")
            if time.perf_counter() - began > timeout:
                raise RuntimeError(f"{self.name} did not answer within {timeout}s")
            time.sleep(0.005)
        self.started_in = time.perf_counter() - began
        return self.started_in

    def rss_kb(self, field="VmRSS") -> int:
        return rss_kb(self.pid, field)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def auditd_server(name: str, db: Path, *extra, list_cache: bool = False) -> Server:
    """An auditd server. Without `list_cache` it reads every list (list_cache_bytes = 0): a
    benchmark that asks one query again and again measures its read path, not a remembered
    answer. Set through the environment, so an older tree (--src) starts as well."""
    # `port` is filled in by Server.start
    return Server(name, [PYTHON, "-m", "auditd", "serve", "--db", str(db), *extra,
                         "--port", "{port}"],
                  env=None if list_cache else {"AUDITD_LIST_CACHE_BYTES": "0"})


def trivial_server() -> Server:
    return Server("trivial", [PYTHON, str(Path(__file__).with_name("trivial.py")), "{port}"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, and of its live descendants (the writer
    process, the body parser)."""
    total = 0.0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = open(f"/proc/{one}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:     # it left meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def scheduled(pid: int) -> dict[int, tuple[int, int]]:
    """For the process and each live descendant: the nanoseconds its main thread (the event loop;
    the writer's thread in the writer process) has run, and has waited runnable for a CPU
    (/proc/PID/schedstat). Two readings give a load's CPU share and how short of cores it was."""
    found = {}
    for one in [pid, *_descendants(pid)]:
        try:
            ran, waited = map(int, Path(f"/proc/{one}/schedstat").read_text().split()[:2])
        except (OSError, ValueError):     # it left meanwhile, or no schedstat on this kernel
            continue
        found[one] = (ran, waited)
    return found


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found
