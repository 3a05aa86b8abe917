"""Minimal GGUF metadata (key/value header) reader.

gguf.GGUFReader memory-maps the whole file and fails on the R1-Distill package, which holds
only the first ~100 MB byte chunk of a split file; the header we need is at the very start.
"""
import struct

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Buf:
    def __init__(self, f):
        self.f = f

    def read(self, fmt):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise EOFError("GGUF header truncated")
        return struct.unpack(fmt, data)[0]

    def string(self):
        n = self.read("<Q")
        return self.f.read(n).decode("utf-8", errors="surrogateescape")

    def value(self, vtype):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.read("<I"), self.read("<Q")
            if etype == _STRING:
                return [self.string() for _ in range(n)]
            fmt = _SCALARS[etype]
            raw = self.f.read(struct.calcsize(fmt) * n)
            return list(struct.unpack("<%d%s" % (n, fmt[1:]), raw))
        return self.read(_SCALARS[vtype])


def read_metadata(src):
    """Return {key: value} for every GGUF metadata entry (tensor infos are not read).
    `src` is a path or a binary file object (e.g. a member of a zip opened with ZipFile.open)."""
    if hasattr(src, "read"):
        return _read(src, getattr(src, "name", "<stream>"))
    with open(src, "rb") as f:
        return _read(f, src)


def _read(f, path):
    b = _Buf(f)
    if f.read(4) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version = b.read("<I")
    if version < 2:
        raise ValueError(f"{path}: GGUF v{version} unsupported")
    b.read("<Q")  # tensor count
    n_kv = b.read("<Q")
    meta = {"GGUF.version": version}
    for _ in range(n_kv):
        key = b.string()
        meta[key] = b.value(b.read("<I"))
    return meta
