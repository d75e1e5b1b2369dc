"""inspector: line-side real-time defect inspection."""
__version__ = "0.1.0"
