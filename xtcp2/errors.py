"""Exceptions that carry a one-line, user-facing message."""


class Xtcp2Error(Exception):
    """Base class: str(err) is shown to the user as is, without a traceback."""


class ConfigError(Xtcp2Error):
    """An invalid configuration value. `field` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DestinationError(Xtcp2Error):
    """A destination could not be set up or could not deliver."""


class DecodeError(Xtcp2Error):
    """Input that is not valid netlink / pcap / protobuf data."""
