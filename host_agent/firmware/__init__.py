"""The recorder firmware from the dock PC's side: build it, install it on a board, commission.

    build.py       device/ and protocol/ compiled with mpy-cross; the build's manifest and id
    board.py       a board's MicroPython REPL, through mpremote's raw REPL
    deploy.py      `bodycam device deploy`: install a build, copying only what changed
    commission.py  `bodycam device commission`: the device key made on the board, the unit
                   key stored there; only the key's id comes back

Production code: the dock PC needs it, and it needs nothing of the lab rig (host_agent/lab
runs the same build in its simulator).
"""
