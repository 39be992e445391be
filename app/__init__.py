"""Tailor's Qt (PySide6) app. Heavy work runs in engine worker processes (``tailor ... --events -``)."""
