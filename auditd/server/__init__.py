"""The server process: listening (or socket activation), the first admin key, signals, systemd
notify and watchdog, logs, and a graceful stop. `run.serve(config)` is the entry point."""
