"""What a person sees when a request is refused: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("llc_service")


def usage_error(command: str, message: str) -> int:
    """Report a refused request of ``llc-service <command>`` and return its exit code (2)."""
    log.error("%s", message)
    print(f"llc-service {command}: error: {message}", file=sys.stderr)
    return 2
