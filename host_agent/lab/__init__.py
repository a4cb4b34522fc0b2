"""The lab rig: what the demo, the tests and the benchmarks need and a dock PC does not.

    simulator.py  a recorder: the firmware in the real MicroPython unix port on a null modem
    nullmodem.py  two ptys back to back, optionally a bad cable (rate, flips, drops, latency)
    broker.py     a real mosquitto on loopback, or the shipped production configuration
    firmware.py   device/ and protocol/ compiled with mpy-cross, as a board gets them

Only `bodycam demo` and `bodycam sim` import this; the dock agent never does.
"""
