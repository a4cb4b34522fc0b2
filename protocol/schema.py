"""Field specs shared by messages and records: (name, kind) pairs checked against a map."""

INT = "int"
BYTES = "bytes"
STR = "str"
LIST = "list"
MAP = "map"
BOOL = "bool"


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


def violation(fields: dict, spec):
    """None if every (name, kind) of `spec` is in `fields` with that kind.

    Otherwise (name, None) for a missing field or (name, kind) for one of the wrong kind.
    Fields not in the spec are allowed: a newer peer may send more.
    """
    for name, kind in spec:
        if name not in fields:
            return name, None
        if not kind_ok(fields[name], kind):
            return name, kind
    return None
