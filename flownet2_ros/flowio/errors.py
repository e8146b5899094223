"""The exception raised for malformed optical-flow files and arrays."""

from __future__ import annotations

__all__ = ["FlowFormatError"]


class FlowFormatError(ValueError):
    """A flow file or flow array is malformed.

    Raised for a wrong magic number or identifier, a corrupt or implausible header, truncated data,
    trailing bytes after the data, and arrays of the wrong shape or dtype handed to a writer or to the
    visualisation functions. The message starts with the file name (or ``flow``/``out`` for in-memory
    arrays) and says what was wrong, e.g.::

        x.flo: truncated: header says 640x480 (2457600 bytes of data) but only 1000 bytes follow

    It subclasses :class:`ValueError`, so code that catches ``ValueError`` keeps working. A missing file
    raises the usual :class:`FileNotFoundError` instead.
    """
