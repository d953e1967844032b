"""Layers as tar streams: applying them to a directory (with whiteouts) and computing them
from two directories (the naive diff for drivers without a native one)."""
