"""User-facing error families; the CLI catches McuqError and prints one line."""


class McuqError(Exception):
    """Base of every error the CLI reports as one clear line with a non-zero exit."""


class ModelError(McuqError):
    """The model file is unreadable, corrupt, or not integer-only where it must be."""


class UnsupportedOpError(McuqError):
    """The model uses an operator (or operator variant) mcuq cannot run."""


class BoardError(McuqError):
    """Unknown board name or a malformed board file."""


class BoardFitError(McuqError):
    """The packed model does not fit the board's RAM or flash."""


class CalibrationError(McuqError):
    """Calibration or input data of the wrong shape, dtype or size."""


class DeviceError(McuqError):
    """Serial port, emulator or flashing tool failure."""


class MismatchError(McuqError):
    """Target and host simulator disagree."""
