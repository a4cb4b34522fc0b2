"""What MicroPython has built in and CPython lacks: the one home of the `const` fallback.

On MicroPython `const(x)` is folded by the compiler (by name, wherever it was imported from),
so `_NAME = const(1)` costs no RAM; on CPython it is the identity. Every module of protocol/
and device/ takes it from here: `from protocol.compat import const`.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef,misc]
        return x
