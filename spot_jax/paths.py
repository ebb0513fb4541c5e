"""Paths as users give them: local ones made absolute once, URLs left alone."""

import os

from etils import epath


def absolute_path(path: epath.PathLike) -> epath.Path:
    """A local path made absolute (from the cwd); URLs (gs://...) as they are.

    Orbax refuses relative paths, and a library entry records where its run is for commands
    run later from another directory, so the entry points pass users' paths through here.
    """
    text = os.fspath(path)
    return epath.Path(text if "://" in text else os.path.abspath(text))
