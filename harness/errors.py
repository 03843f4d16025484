"""The one error type users see: a single line naming the file, key or row and what is allowed.

The CLI turns any HarnessError into that line on stderr and exit code 2, with no traceback.
"""


class HarnessError(Exception):
    """Bad input or an unreachable resource, explained in one line."""


class SpecError(HarnessError):
    """A study spec that cannot be run: malformed YAML, unknown key or value."""


class DataError(HarnessError):
    """A data file that breaks the contest format: columns, pixel range, labels, ids."""


class DiskWriteError(HarnessError):
    """A file or artifact that could not be written (a full disk, a quota, a read-only mount)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"could not write {what}: {reason}; nothing was half-written: free space and run the "
                         "same command again to resume")


class AlreadyReported(HarnessError):
    """A training process printed its one-line error and stopped; the parent stops the study without a second
    line."""


def masked(text: str, url: str | None = None) -> str:
    """`text` with the password of `url` (default: `text` itself, a URL) shown as ***: errors are printed."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url or text).password
    except ValueError:
        return text
    return text.replace(f":{password}@", ":***@").replace(password, "***") if password else text
