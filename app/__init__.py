"""DearDiary registry: a model registry service on MongoDB."""

__version__ = "0.1.0"
