"""The compiled hot path: shared-memory segments, the SPSC ring, fixed point, the order book.

Nothing here imports textual or rich.
"""
