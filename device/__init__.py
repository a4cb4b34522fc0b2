"""Recorder firmware (MicroPython): segments, on-device signing, the dock protocol server."""

FIRMWARE_VERSION = "0.1.0"
