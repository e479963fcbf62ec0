"""A progress bar on stderr for the long commands (export, import, purge)."""
import sys
import time


class Progress:
    """A bar redrawn in place when stderr is a terminal; otherwise a line every `every` seconds."""

    def __init__(self, label: str, total: int | None, unit: str, stream=None, every: float = 5.0):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = self.last = time.monotonic()

    def _text(self, done: int, extra: str) -> str:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            share = min(done / self.total, 1.0)
            if self.tty:
                bar = "#" * int(share * 30)
                text = f"{self.label} [{bar:<30}] {share:4.0%}"
            else:
                text = f"{self.label}: {share:.0%}"
            text += f" ({done:,}/{self.total:,} {self.unit}, {rate:,.0f}/s)"
        else:
            text = f"{self.label}: {done:,} {self.unit} ({rate:,.0f}/s)"
        return text + (f" {extra}" if extra else "")

    def update(self, done: int, extra: str = ""):
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self._text(done, extra))
        else:
            self.stream.write(self._text(done, extra) + "\n")
        self.stream.flush()

    def finish(self, done: int, extra: str = ""):
        if self.tty:
            self.stream.write("\r\x1b[K" + self._text(done, extra) + "\n")
            self.stream.flush()
