"""Error hierarchy of the pack.

Every error says what was expected, what arrived, and how to fix it. The node layer shows these messages to
ComfyUI users unchanged, so they are written for people, not for stack traces.
"""


class ToraError(Exception):
    """Base class of every error raised on purpose by this pack."""


class ConfigError(ToraError, ValueError):
    """A model configuration or a generation setting is invalid (sizes, frame counts, presets)."""


class CheckpointError(ToraError):
    """A model file is missing, unreadable, of the wrong kind, or does not fit the model."""


class TrajectoryFormatError(ToraError, ValueError):
    """A trajectory (file, string or JSON) is malformed or out of range; names the track, point and field."""


class GenerationInterrupted(ToraError):
    """The user (or the host application) asked a running generation to stop; raised between denoising steps."""
