"""(being written)"""


def setup(app):
    """Add this module's routes and background tasks to the application."""


def register_commands(commands):
    """Add this module's subcommands to the `auditd` parser."""
