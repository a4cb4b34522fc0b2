"""What differs per board: one package each, with its HAL (device/hal.py) and entry point.

    unix_sim   the MicroPython unix port with simulated hardware (tests, demo, lab rig)

The firmware core (device/*.py) never imports a board; a board imports the core.
"""
