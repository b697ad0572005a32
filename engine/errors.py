"""The project's small exception hierarchy, caught once at the edge (CLI, batch loop)."""

from __future__ import annotations

from pathlib import Path


class CvmatteError(Exception):
    """Base of every error cvmatte raises on purpose."""


class ModelError(CvmatteError):
    """A model cannot be found, fetched, verified or loaded."""


class DeviceError(CvmatteError):
    """The requested device or execution provider is not usable; the message says why."""


class ImageError(CvmatteError):
    """One input image cannot be used. Carries the file so a batch can report it and go on."""

    def __init__(self, source: str | Path | None, reason: str):
        self.source = str(source) if source is not None else "<array>"
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ImageTooLarge(ImageError):
    """Past the configured pixel limit (also decompression bombs)."""
