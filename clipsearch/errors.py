"""Typed exceptions raised by the library; the CLI turns each into one line on stderr."""


class ClipsearchError(Exception):
    """Base class for every failure a user should see as a one-line message."""


class LibraryNotFound(ClipsearchError):
    pass


class LibraryVersionError(ClipsearchError):
    pass


class LibraryCorrupt(ClipsearchError):
    pass


class LibraryLocked(ClipsearchError):
    pass


class ModelMismatch(ClipsearchError):
    pass


class ModelUnavailable(ClipsearchError):
    pass


class BadQuery(ClipsearchError):
    pass


class BadImage(ClipsearchError):
    pass


class BadPath(ClipsearchError):
    pass
