"""The one error type of the data layer.

A ``DataError`` is a permanent refusal: the input itself is wrong (missing column, ragged rows, ids the model
cannot embed), so retrying cannot help. It subclasses ``ValueError`` so callers that classify failures by type
treat it as permanent without importing this package.
"""


class DataError(ValueError):
    """DATA cannot be used as given; the message names the file and the problem."""
