"""The dock PC's service (`bodycam dockd`): recorders arriving on serial ports and over MQTT
are each served in a worker process until they are emptied and ready for duty.

    config.py    dock.toml: every key known, every value checked, errors name the line
    service.py   the daemon: discovery, slots, signals, systemd notify and watchdog
    slot.py      one slot's worker: dock, re-check while charging, release; one per recorder
    status.py    what `bodycam status` reads and shows
    notify.py    sd_notify without libsystemd
"""
