"""DATA (Parquet/JSONL, ``input_ids`` or text; local or fsspec URI) → fixed-length token rows + fingerprint."""

from llc_service.data.errors import DataError
from llc_service.data.files import data_fingerprint
from llc_service.data.load import TokenData, check_batch, load_token_data

__all__ = ["DataError", "data_fingerprint", "TokenData", "check_batch", "load_token_data"]
