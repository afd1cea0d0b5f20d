"""Bridges to annotation tools' own plug-in interfaces (each needs its tool's optional package)."""
