"""The error model: the library raises these; the CLI turns them into one line and an exit status.

Exit status 2: bad input, found before any work starts. 1: a failure during work. 130: interrupted.
"""


class LipsyncError(Exception):
    """Base of every error the CLI reports as one line.

    The message speaks of the job (its files and options by name), never of command-line flags; `option`
    names the job option at fault, so that the CLI can point at its flag.
    """

    exit_code = 1

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class InputError(LipsyncError):
    """Bad input found before work starts."""

    exit_code = 2


class AudioError(InputError):
    """An audio file that cannot be used."""


class CharacterError(InputError):
    """A character folder, manifest, template or box file that cannot be used."""


class ModelError(InputError):
    """An ONNX model that cannot be opened or does not fit its contract."""


class DeviceError(InputError):
    """A requested execution device that cannot be honoured."""


class OutputError(InputError):
    """An output path that cannot or must not be written."""


class OutputExists(OutputError):
    """The output exists and replacing it was not asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, option="overwrite")


class RenderError(LipsyncError):
    """A failure during work (inference, encoding)."""

    exit_code = 1


class EncoderError(RenderError):
    """ffmpeg failed while encoding."""


class InferenceError(RenderError):
    """A model raised inside onnxruntime."""


class Busy(RenderError):
    """A resource (a device's model budget, a server's queue) stayed full for longer than the caller waits."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the work. Like KeyboardInterrupt, not an error of a job or an input: no
    `except Exception` and no `except LipsyncError` catches it."""

    exit_code = 130
