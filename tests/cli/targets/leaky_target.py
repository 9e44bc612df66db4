"""Functions for `heaptrace leaks` to hunt in (used by the CLI tests)."""

_kept = []


def leak():
    _kept.append(bytearray(700))  # LEAK


def no_leak():
    return len(bytearray(700))


def boom():
    raise ValueError("this target always fails")


class Handler:
    def leak(self):
        _kept.append(bytearray(700))  # LEAK


handler = Handler()

NOT_CALLABLE = 42
