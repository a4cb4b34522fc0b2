"""Dock agent (CPython): clock sync, readiness check, verified offload into the evidence vault."""
