"""User-facing errors.

Every problem a user can cause (a misspelt name, a bad folder, an odd image, missing
weights) is raised as a :class:`JoinbenchError` whose message is one line that names the
problem and the fix. The CLI prints that line and exits with status 2 instead of showing
a traceback from deep inside torch.
"""
from __future__ import annotations


def did_you_mean(name: str, options, n: int = 1) -> str:
    """`` Did you mean 'x'?`` (or ``'x' or 'y'``) for the options closest to a misspelt ``name``;
    empty when nothing is close. Appended to "Unknown ..." messages."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=n, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class JoinbenchError(Exception):
    """An error caused by input, configuration or environment, with a one-line message."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnknownNameError(JoinbenchError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a one-line message saying what was kept and how to resume (the CLI prints it)."""


class ImageError(JoinbenchError):
    """An image file that cannot be read or is unsuitable (size, depth, channels)."""


class DatasetError(JoinbenchError):
    """A dataset that cannot be built: missing folder, mismatched ground truth, ..."""
