"""The error a model source raises when it cannot be loaded; its own module so that every kind of source
(folders, Hub ids, GGUF packages, adapters) raises the one type that the app and ``--check`` report."""


class SourceError(OSError):
    """A source that could not be loaded: the message names the source, what was tried and what to do."""
