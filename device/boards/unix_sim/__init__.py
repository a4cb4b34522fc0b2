"""The MicroPython unix port as a recorder: simulated hardware on a host (see main.py)."""
