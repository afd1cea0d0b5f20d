"""Bridges to annotation tools (Label Studio's ML backend API)."""
