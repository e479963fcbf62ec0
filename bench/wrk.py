"""HTTP load from wrk (a separate C process, never the server's event loop), and its numbers."""
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

INSTALL_HINT = ("wrk is missing: install it with `sudo apt-get update && sudo apt-get install -y "
                "wrk` (Debian/Ubuntu) or `brew install wrk` (macOS), then rerun")


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(INSTALL_HINT)
    return path


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int          # non-2xx/3xx responses plus socket errors
    server_cpu: float = 0.0   # the server's CPU time / wall time during the run (1.0 = one core)
    cpu_us_per_request: float = 0.0   # the server's CPU time per answered request


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def _lua(method: str, headers: dict, body: str | None) -> str:
    lines = [f"wrk.method = {json.dumps(method)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    return "\n".join(lines) + "\n"


def niced(nice: int) -> list[str]:
    """The command prefix that runs a load generator at niceness `nice` (none for 0)."""
    return ["nice", "-n", str(nice)] if nice else []


def run(url: str, connections: int, seconds: float, method: str = "GET", headers=None,
        body: str | None = None, threads: int = 2, nice: int = 0) -> Result:
    """`nice`: run wrk at this niceness (bench.mixed's --nice)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(method, headers or {}, body))
    out = subprocess.run(
        [*niced(nice), find_wrk(), f"-t{min(threads, connections)}", f"-c{connections}",
         f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s", "-s", script.name, url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return Result(rps, p50, p99, requests, errors)
