"""The vault's one exception."""


class VaultError(Exception):
    """The vault refused an operation, or is not a vault."""
