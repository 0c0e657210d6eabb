"""The package version: a leaf, so every layer (client and emulator included) can name it."""

__version__ = "0.1.0"
