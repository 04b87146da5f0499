"""Errors raised by the annotation store, each with a message a user can act on.

Every error that comes from bad input subclasses `ValueError`, so callers that only want to show
a message (the Gradio app, the CLI) can catch `AnnotationError` and print `str(err)`. An error
means nothing was written: every write runs in one transaction that is rolled back on failure.
"""

from __future__ import annotations


class AnnotationError(Exception):
    """Base class of every error raised by `annotations`."""


class InvalidInputError(AnnotationError, ValueError):
    """An argument is out of range or malformed (a grade of 5, an empty annotator name, ...)."""


class UnknownIdError(InvalidInputError):
    """A question, passage, run or judgment id is not in the store."""


class DecisionFileError(InvalidInputError):
    """A decision file or corpus file is malformed; the message names the file and line."""


class StoreFormatError(AnnotationError):
    """The database file is not SQLite, not an annotation store, or made by a newer schema."""


class StoreBusyError(AnnotationError):
    """The database stayed locked by other writers longer than the configured retry deadline."""
