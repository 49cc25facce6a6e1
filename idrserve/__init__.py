"""idrserve: a read-only tile and thumbnail server for public bioimage repositories."""

__version__ = "0.1.0"
