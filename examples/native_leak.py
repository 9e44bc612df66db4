"""A request handler that leaks memory inside a C library.

Each request compresses its payload with zlib's C library, called through
ctypes.  The handler forgets to call deflateEnd, so the compressor's state
(about 270 KB, taken by libz with malloc) is never freed.  The Python side
keeps nothing: tracemalloc sees no growth at all; heaptrace sees it with
native tracing:

    heaptrace leaks --native examples/native_leak.py:handle_request
"""
import ctypes
import ctypes.util

_libz = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
_libz.zlibVersion.restype = ctypes.c_char_p
_libz.deflateInit_.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libz.deflateEnd.argtypes = [ctypes.c_void_p]
_VERSION = _libz.zlibVersion()
_Z_STREAM_SIZE = 112     # sizeof(z_stream) on 64-bit Linux


def compress_start(level):
    stream = ctypes.create_string_buffer(_Z_STREAM_SIZE)
    if _libz.deflateInit_(stream, level, _VERSION, _Z_STREAM_SIZE) != 0:
        raise RuntimeError("deflateInit failed")
    return stream


def handle_request(payload=b"hello" * 100):
    stream = compress_start(6)
    # ... compress payload ...
    # (the bug: _libz.deflateEnd(stream) is never called)
    return len(payload)


def handle_request_fixed(payload=b"hello" * 100):
    stream = compress_start(6)
    _libz.deflateEnd(stream)
    return len(payload)


if __name__ == "__main__":
    for _ in range(1000):
        handle_request()
