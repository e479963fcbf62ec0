"""(being written)"""


def setup(app):
    """Add this module's routes and background tasks to the application."""
