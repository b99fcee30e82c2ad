"""DATA (Parquet/JSONL, ``input_ids`` or text; local or fsspec URI) → fixed-length token rows + fingerprint."""

from llc_service.data.errors import DataError
from llc_service.data.load import TokenData, check_batch, load_token_data

__all__ = ["DataError", "TokenData", "check_batch", "load_token_data"]
