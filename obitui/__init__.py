"""obitui: an operator console for low-latency crypto market data."""

__version__ = "0.1.0"
