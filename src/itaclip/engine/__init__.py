"""The engine: image → windows → encoder → similarity maps → refinement → labels (see docs/ARCHITECTURE.md)."""
