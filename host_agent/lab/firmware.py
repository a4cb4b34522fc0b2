"""The firmware build, for the lab rig (simulator, tools/check_device.py): it lives in the
production package host_agent/firmware/build.py, since the dock PC builds it too
(`bodycam device deploy`) and must not need the lab rig for that."""

from host_agent.firmware.build import (
    PACKAGES,
    SOURCE_ROOT,
    FirmwareError,
    cached_build,
    compile_firmware,
    firmware_sources,
    mpy_cross_cmd,
)

__all__ = ["PACKAGES", "SOURCE_ROOT", "FirmwareError", "cached_build", "compile_firmware",
           "firmware_sources", "mpy_cross_cmd"]
