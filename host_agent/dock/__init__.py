"""The dock agent: one docking of a recorder, and many ports at once.

    session.py    identify, sync the clock, deliver the policy, offload, release for duty
    readiness.py  the duty rules (Art. 4) over a recorder's status, thresholds from the policy
    clocksync.py  NTP-style offset and bound from ping samples (pure arithmetic)
    many.py       a many-slot dock: every port at once, in worker processes

The dock talks to recorders through host_agent/transport/ and keeps what they give it in
host_agent/vault/. It never imports the lab rig (host_agent/lab/).
"""

from host_agent.dock.readiness import Readiness, Thresholds
from host_agent.dock.session import (
    DeviceError,
    DockReport,
    DockSession,
    Identity,
    Offload,
    SessionError,
    dock,
)

__all__ = ["DeviceError", "DockReport", "DockSession", "Identity", "Offload", "Readiness",
           "SessionError", "Thresholds", "dock"]
