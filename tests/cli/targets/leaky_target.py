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


def needs_args(count, size=10):
    return [bytearray(size) for _ in range(count)]


class Client:
    def ping(self):
        return bytearray(10)


client = Client()
