"""auditd's settings: one dataclass, filled from defaults, a TOML file, AUDITD_* variables and flags."""
import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def default_db_path() -> str:
    """$STATE_DIRECTORY under systemd, else ./auditd.db."""
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return str(Path(state_dir) / "auditd.db") if state_dir else "auditd.db"


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = field(default_factory=default_db_path)
    synchronous: str = "FULL"          # SQLite synchronous: FULL (default), NORMAL, OFF
    group_commit: bool = True          # commit concurrent writes together
    geoip_db: str = ""                 # MaxMind City database file for `location`
    log_level: str = "info"
    access_log: bool = True
    retention_days: int = 0            # 0 keeps actions forever
    stream_stall_seconds: float = 30.0  # a WebSocket reader stuck this long is closed (1013)
    shutdown_timeout: float = 10.0
    max_body_bytes: int = 8 * 1024 * 1024
    demo: bool = False
    fixtures: str = ""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
