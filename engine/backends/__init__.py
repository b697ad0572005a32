"""Backends share one small interface (see base.Backend); heavy imports stay inside each one."""

from .base import Backend, create_backend

__all__ = ["Backend", "create_backend"]
