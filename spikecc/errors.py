"""One exception hierarchy. Every message names the file, node or layer, what is wrong and what to do.

The CLI prints `error: <message>` on one line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class SpikeccError(Exception):
    """Base of every error spikecc raises on purpose."""


class InputFileError(SpikeccError):
    """A file given by the user is missing, unreadable or not in the expected format."""


class UnknownOpError(SpikeccError):
    """A graph holds a node type spikecc has no definition (or no lowering) for."""


class GraphError(SpikeccError):
    """The graph is malformed: dangling edges, shape mismatches, missing inputs or outputs."""


class ShapeError(GraphError):
    """A node's input shape does not match what its parameters expect."""


class CheckpointError(SpikeccError):
    """A model checkpoint is missing keys, has wrong shapes or belongs to another model family."""


class BudgetError(SpikeccError):
    """A layer does not fit the per-core budget of the target."""


class BackendError(SpikeccError):
    """A backend cannot run the graph it was given (unsupported parameters, missing runtime)."""


class SpikeccWarning(UserWarning):
    """Something the user should know about a result that is still produced (values clipped, weights rounded
    to zero, a layer that never fires). The CLI prints each as one line `warning: ...` on stderr."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, whole (a library's message cut mid-sentence helps
    nobody), or the exception's type name when it has no message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
