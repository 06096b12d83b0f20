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


class LibraryReadOnly(ClipsearchError):
    """A command that writes was given a library it may only read (no write permission, read-only media)."""


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


class BadOption(ClipsearchError):
    """An option value the library does not know (e.g. an index type)."""


class ExtraNotInstalled(ClipsearchError):
    """An optional dependency (an extra such as `clipsearch[ray]`) is needed and missing."""


class BadShard(ClipsearchError):
    """An embedding shard folder or file that cannot be used."""


class ClusterError(ClipsearchError):
    """The Ray cluster cannot be reached, or a job on it did not complete."""
