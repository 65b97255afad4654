"""Errors that tell the user what is wrong and what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BMDGANError(Exception):
    """Base of the engine's user-facing errors; the command line turns them into exit code 2."""


class InputError(BMDGANError):
    """An input file or value cannot be used: names the file, the problem and the fix."""

    def __init__(self, path: str | Path | None, problem: str, fix: str = ""):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")


OS_ERROR_FIXES = {
    "ENOENT": "check the path",
    "EEXIST": "choose another output path or remove the existing one",
    "ENOTDIR": "a part of the path is a file, not a folder: choose another path",
    "EISDIR": "give a file, not a folder",
    "EACCES": "choose a location you may write to, or fix its permissions",
    "EPERM": "choose a location you may write to, or fix its permissions",
    "EROFS": "the file system is read-only: choose another location",
    "ENOSPC": "free disk space or choose another location",
    "ENAMETOOLONG": "use a shorter path",
}
"""What to do about the file-system errors a user can meet (by errno name)."""

DAMAGED_FILE_ERRORS = {
    "SafetensorError": "the model weights cannot be read (copy the model folder again, or retrain it)",
    "DecompressionBombError": "give an image of at most the pixel count above",
    "InvalidDicomError": "give a DICOM file",
    "YAMLError": "fix the YAML file",
    "JSONDecodeError": "fix or replace the JSON file",
    "UnicodeDecodeError": "give a UTF-8 text file",
}
"""Errors of third-party readers (matched by class name, so that nothing here imports them) and what to do."""

INPUT_NOTE = "bmdgan input file: "
"""Prefix of the exception note that :func:`about_file` adds."""

PARSE_FAILURES = ("could not convert string to float", "invalid literal for int()")
"""Messages of a ValueError from reading a number out of an input file."""


@contextmanager
def about_file(path: str | Path) -> Iterator[None]:
    """Work on one input file: an error raised inside carries a note naming ``path``, so that its one-line message
    names the file even when the reader did not (a decompression bomb, a damaged JSON file)."""
    try:
        yield
    except Exception as error:
        error.add_note(f"{INPUT_NOTE}{path}")
        raise


def describe_expected_error(error: BaseException) -> str | None:
    """One line ``<file>: <what> (<what to do>)`` for an error the user can fix (a BMDGANError, a file-system
    error, an unreadable or damaged input file, no memory); None for an internal error (a bug). The file is the
    one the error names, else the one of :func:`about_file`."""
    import errno

    if isinstance(error, BMDGANError):
        message = str(error)
    elif isinstance(error, OSError) and error.errno is not None:
        name = errno.errorcode.get(error.errno, "")
        where = f"{error.filename}: " if error.filename is not None else ""
        fix = OS_ERROR_FIXES.get(name)
        message = f"{where}{error.strerror or error}" + (f" ({fix})" if fix else "")
    elif isinstance(error, OSError):  # raised by a reader with a message only, e.g. PIL's unidentified image
        message = f"{error} (give a readable file of the expected kind)"
    elif isinstance(error, MemoryError):
        message = "not enough memory for this input (give a smaller input or close other programs)"
    elif any(kind.__name__ in DAMAGED_FILE_ERRORS for kind in type(error).__mro__):
        name = next(kind.__name__ for kind in type(error).__mro__ if kind.__name__ in DAMAGED_FILE_ERRORS)
        message = f"{error} ({DAMAGED_FILE_ERRORS[name]})"
    elif isinstance(error, ValueError) and str(error).startswith(PARSE_FAILURES):
        message = f"a number in the input cannot be read: {error} (check the input files)"
    else:
        return None
    for note in getattr(error, "__notes__", ()):
        path = note[len(INPUT_NOTE) :] if note.startswith(INPUT_NOTE) else None
        if path and path not in message:
            message = f"{path}: {message}"
    return " ".join(message.split())
