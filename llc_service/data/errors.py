"""The one error type of the data layer.

A ``DataError`` is a permanent refusal: the input itself is wrong (missing column, ragged rows, ids the model
cannot embed), so retrying cannot help. It is a :class:`~llc_service.errors.PermanentError` (and, as
it always was, a ``ValueError``).
"""


from llc_service.errors import PermanentError


class DataError(PermanentError, ValueError):
    """DATA cannot be used as given; the message names the file and the problem."""

    advice = "fix DATA (docs/sources-and-loading.md says what is accepted) and measure again"
