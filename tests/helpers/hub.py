"""A Hugging Face hub cache laid out by hand, for offline tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fill_hub_cache(cache: Path, repo_id: str, folder: Path, files=None) -> str:
    """Put ``folder``'s files (or those named in ``files``) into ``cache`` as huggingface_hub lays out
    a download: refs/main → snapshots/<commit>/<files>. Returns the commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for item in folder.iterdir():
        if files is None or item.name in files:
            (snapshot / item.name).write_bytes(item.read_bytes())
    return commit
