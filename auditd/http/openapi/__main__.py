"""`python -m auditd.http.openapi > docs/openapi.json`: the OpenAPI document on stdout."""
import sys

from . import render

sys.stdout.write(render())
