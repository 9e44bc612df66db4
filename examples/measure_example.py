"""Measure the memory of a block and of a function with heaptrace.

    python examples/measure_example.py
"""

from heaptrace.measure import measure, measured


def parse(lines):
    """Keeps one record per line; the split lists are transient."""
    return [{"fields": line.split(",")} for line in lines]


@measured(top=2)
def build_index(records):
    return {i: record for i, record in enumerate(records)}


if __name__ == "__main__":
    lines = [f"{i},name-{i},{i * 3}" for i in range(20_000)]
    with measure("parse", top=3) as m:
        records = parse(lines)
    print(m)
    index = build_index(records)   # prints its own summary to stderr
    print(f"parse kept {m.net / len(records):.0f} bytes per record, "
          f"peak {m.peak / 1e6:.1f} MB")
