"""Silence third-party progress bars and advisory warnings that drown the CLI's own output."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_third_party() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    for name in ("bm25s", "faiss", "huggingface_hub", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
