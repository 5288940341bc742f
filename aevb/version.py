"""The package version, at the bottom so that every module can record it without a cycle."""
__version__ = "0.1.0"
