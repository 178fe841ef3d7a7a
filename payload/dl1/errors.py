"""One exception type per kind of user error; the CLI maps each to a one-line message and an exit code."""

from __future__ import annotations

from hpscan.api.contract import PayloadExit


class DL1Error(Exception):
    """Base of the payload's user errors: the message names the field or file at fault."""

    exit_code: int = PayloadExit.INVALID_INPUT


class SettingsError(DL1Error):
    """The shard file's ``settings`` (``spec.payload.settings``) are invalid."""


class ParameterError(DL1Error):
    """A combination names a parameter the payload does not understand, or gives a bad value."""


class DataError(DL1Error):
    """An input file is missing, empty, lacks a field or holds too few flavours."""


class GPUUnavailableError(DL1Error):
    """A GPU is required but none is usable."""

    exit_code = PayloadExit.GPU_UNAVAILABLE
