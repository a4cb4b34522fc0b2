"""The ESP32-S3 (with PSRAM) as a recorder's companion MCU: real hardware (see README.md)."""
