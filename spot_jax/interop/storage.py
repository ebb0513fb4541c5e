"""Storage of checkpoint files: local paths and gs:// URLs as tensorstore key-value stores.

All file access of the T5X reader goes through here, so local paths and gs:// URLs work alike
without TensorFlow or gcsfs.
"""

from typing import Any

import tensorstore as ts
from etils import epath


def kvstore_spec(path: str) -> dict[str, Any]:
    """The tensorstore kvstore spec of a directory or file path (local or gs://bucket/...)."""
    path = str(path)
    if path.startswith("gs://"):
        bucket, _, rest = path[len("gs://") :].partition("/")
        return {"driver": "gcs", "bucket": bucket, "path": rest}
    return {"driver": "file", "path": str(epath.Path(path).absolute())}


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def read_bytes(path: str) -> bytes | None:
    """The bytes of a file, or None if it does not exist."""
    spec = kvstore_spec(path)
    parent, _, key = spec["path"].rpartition("/")
    store = ts.KvStore.open({**spec, "path": parent + "/"}).result()
    result = store.read(key).result()
    return bytes(result.value) if result.state == "value" else None


def list_keys(directory: str) -> set[str]:
    spec = kvstore_spec(directory)
    store = ts.KvStore.open({**spec, "path": spec["path"].rstrip("/") + "/"}).result()
    return {k.decode() for k in store.list().result()}
