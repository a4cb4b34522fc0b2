"""Field specs shared by messages and records: (name, kind) or (name, kind, lo, hi) checked
against a map.

With bounds, an INT must lie in lo..hi and a BYTES, STR or LIST must have a length in lo..hi:
every value a peer sends is in a range the receiver was written for, so an extreme integer or
a huge list is refused at the door instead of failing deep inside a handler.
"""

INT = "int"
BYTES = "bytes"
STR = "str"
LIST = "list"
MAP = "map"
BOOL = "bool"

U32 = 0xFFFFFFFF
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def kind_ok(value, kind: str) -> bool:
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)  # True is not a number
    if kind == BYTES:
        return isinstance(value, bytes)
    if kind == STR:
        return isinstance(value, str)
    if kind == LIST:
        return isinstance(value, list)
    if kind == MAP:
        return isinstance(value, dict)
    return isinstance(value, bool)


def _in_bounds(value, kind: str, lo: int, hi: int) -> bool:
    n = value if kind == INT else len(value)
    return lo <= n <= hi


def violation(fields: dict, spec):
    """None if every field of `spec` is in `fields` with its kind (and within its bounds).

    Otherwise (name, None) for a missing field, (name, kind) for one of the wrong kind, or
    (name, "lo..hi") for one out of its bounds. Fields not in the spec are allowed: a newer
    peer may send more.
    """
    for entry in spec:
        name, kind = entry[0], entry[1]
        if name not in fields:
            return name, None
        value = fields[name]
        if not kind_ok(value, kind):
            return name, kind
        if len(entry) == 4 and not _in_bounds(value, kind, entry[2], entry[3]):
            what = "" if kind == INT else "a length of "
            return name, "%swithin %d..%d" % (what, entry[2], entry[3])
    return None
