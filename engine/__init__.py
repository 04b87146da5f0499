"""RocketQA workbench engine: data, dual-encoder and cross-encoder models, FAISS and BM25
retrieval, evaluation, the RocketQA training pipeline and the `python -m engine` CLI.

This package imports neither gradio nor sqlite_utils (tests/test_layering.py checks it).
"""
