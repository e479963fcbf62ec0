"""auditd: the Docker Cloud Audit API (Actions) as one local daemon."""
__version__ = "0.1.0"
