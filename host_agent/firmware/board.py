"""A board's MicroPython REPL, through mpremote's serial transport (its raw REPL).

The board is interrupted (Ctrl-C) and put in the raw REPL, never soft-reset: the unix port's
REPL exits on a soft reset, and a board keeps its files either way. Every failure is a
BoardError whose one line names the port: a port that cannot be opened, one where no
MicroPython REPL answers (within `timeout` s), a board that stops answering, or code that
raised on the board (its exception's last line, not the traceback).
"""

from __future__ import annotations

import contextlib
import io
import json
from types import TracebackType
from typing import Any

CONNECT_TIMEOUT_S = 3.0  # no raw REPL prompt within this: not a MicroPython REPL
_READ_TIMEOUT_S = 1.0  # the serial read timeout (a silent line must not block forever)
_CHUNK = 1024  # bytes of a file per exec (its repr is compiled on the board: keep it small)


class BoardError(Exception):
    """The board could not be reached or did not do what was asked; one line, naming the port."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


class Board:
    """One connection to a board's raw REPL: `with Board(port) as board: board.run(code)`."""

    def __init__(self, port: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.port = port
        self.timeout = timeout
        self._t: Any = None

    # -- the connection ------------------------------------------------------------------------
    def open(self) -> Board:
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError:
            raise BoardError("mpremote is missing: pip install mpremote") from None
        try:
            # mpremote prints what it read when it finds no REPL: keep that off our stdout.
            with contextlib.redirect_stdout(io.StringIO()):
                self._t = SerialTransport(self.port, timeout=_READ_TIMEOUT_S)
                try:
                    self._t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
                except TransportError:
                    raise BoardError(f"{self.port}: no MicroPython REPL answered"
                                     f" (no raw REPL prompt within {self.timeout:g} s)") from None
        except BoardError:
            self.close()
            raise
        except TransportError as exc:  # "failed to access PORT"
            self.close()
            raise BoardError(f"{self.port}: cannot open the port ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException, OSError …
            self.close()
            raise BoardError(f"{self.port}: {type(exc).__name__}: {exc}") from None
        return self

    def close(self) -> None:
        t, self._t = self._t, None
        if t is None:
            return
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            if t.in_raw_repl:
                t.exit_raw_repl()
        with contextlib.suppress(Exception):
            t.close()  # a pty has no RTS/DTR: mpremote raises on them
        with contextlib.suppress(Exception):
            t.serial.close()

    def __enter__(self) -> Board:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- running code ----------------------------------------------------------------------------
    def run(self, code: str, what: str = "", timeout: float = 10.0) -> str:
        """Run `code` on the board; what it printed. BoardError with the board's exception
        (its last line) if it raised, or if the board was silent for `timeout` s."""
        from mpremote.transport import TransportError

        if self._t is None:
            raise BoardError(f"{self.port}: not connected")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out, err = self._t.exec_raw(code, timeout=timeout)
        except TransportError as exc:
            raise BoardError(f"{self.port}: the board stopped answering ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - SerialException, OSError: the line went away
            raise BoardError(f"{self.port}: the line failed: {type(exc).__name__}: {exc}"
                             ) from None
        if err:
            raise BoardError(f"{self.port}: {what or 'the board'} failed:"
                             f" {_last_line(bytes(err).decode('utf-8', 'replace'))}")
        return bytes(out).decode("utf-8", "replace")

    def run_json(self, code: str, what: str) -> Any:
        """Run `code`, which prints one JSON document last; that document."""
        out = self.run(code, what)
        try:
            return json.loads(_last_line(out))
        except ValueError:
            raise BoardError(f"{self.port}: {what}: unexpected answer {out[-200:]!r}") from None

    # -- files -----------------------------------------------------------------------------------
    def write_file(self, path: str, data: bytes) -> None:
        """Write `data` to `path` on the board (its parent must exist), in small pieces."""
        what = f"writing {path}"
        self.run(f"f=open({path!r},'wb')\nw=f.write", what)
        for i in range(0, len(data), _CHUNK):
            self.run(f"w({bytes(data[i:i + _CHUNK])!r})", what)
        self.run("f.close()\ndel f,w", what)
