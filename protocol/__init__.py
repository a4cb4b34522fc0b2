"""What the recorder and the dock speak: pure code, no I/O, same files on MicroPython and CPython."""
