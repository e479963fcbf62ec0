"""Background tasks that run beside the server: retention, and the demo's simulated producer."""
