"""Exceptions raised by lfeval.

Every error subclasses :class:`ValueError` or :class:`RuntimeError`, so code that
catches the builtin types keeps working; the message names the argument at fault
and how to fix it.
"""


class LfevalError(Exception):
    """Base class of every lfeval exception."""


class InvalidArgument(LfevalError, ValueError):
    """An argument has a wrong value, type or shape."""


class InvalidInput(InvalidArgument):
    """Input data is malformed: wrong shape, NaN/inf, empty batch, out of range."""


class UnknownName(InvalidArgument):
    """A name (data set, pretext task, method, metric, config key) is not known."""


class DatasetUnavailable(LfevalError, RuntimeError):
    """A data set's files are not on disk and cannot be downloaded here."""


class RunIncomplete(LfevalError, RuntimeError):
    """A run folder lacks a stored stage or table: the run did not finish."""


class ModelStateError(LfevalError, RuntimeError):
    """A model is in the wrong state, e.g. in train mode where eval mode is required."""


class LabelsRequired(InvalidArgument):
    """A metric or method needs labels (``y_batch``) but none were given."""


class NotAdaptable(InvalidArgument):
    """A stock Quantus metric cannot be scored label-free by the adapter."""


class NotApplicable(InvalidArgument):
    """A run names a pretext task, explainer or metric that does not apply to its data's modality (e.g. a noise
    metric on token ids)."""


class ExtraMissing(LfevalError, RuntimeError):
    """An optional dependency (a pip extra such as ``lfeval[ray]``) is not installed."""


class CellsFailed(LfevalError, RuntimeError):
    """Cells of a grid failed (after their retries); the other cells finished and are stored.

    ``failures`` is a list of :class:`lfeval.execution.CellFailure` (cell name and error text).
    """

    def __init__(self, message: str, failures=()):
        super().__init__(message)
        self.failures = list(failures)


class OutOfMemory(LfevalError, RuntimeError):
    """A pass ran out of (GPU) memory even at one row; the message names LFEVAL_PASS_BUDGET and ``batch_size``."""


class RunLocked(LfevalError, RuntimeError):
    """Another process is writing the run folder (one folder, one writer); the message names it (pid, host,
    start time) and says how to go on: wait for it (``--wait``) or run under another ``--name``."""


class WriteFailed(LfevalError, RuntimeError):
    """A file of a run could not be written (disk full, I/O error); the files stored before are intact.

    ``path`` is the file that failed and ``errno`` the operating system's error number.
    """

    def __init__(self, message: str, path=None, errno=None):
        super().__init__(message)
        self.path, self.errno = path, errno
