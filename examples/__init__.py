"""Runnable examples (not part of the pgqueue package)."""
