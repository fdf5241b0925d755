"""Reading pipeline configs (placeholder: re-exports the loader that still lives in hrm.config)."""

from hrm.config import flatten, from_dict, quote, to_dict

__all__ = ["flatten", "from_dict", "quote", "to_dict"]
