"""A tiny package the examples build into a wheel and install inside a sandbox."""

__version__ = "0.1.0"


def greet(name: str) -> str:
    return f"hello, {name}"
