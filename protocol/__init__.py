"""What the recorder and the dock speak.

Pure code, no I/O; the same files run on MicroPython and CPython.
"""
