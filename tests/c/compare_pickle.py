"""compare_pickle.py: size of the standard tracemalloc pickle of a snapshot
that test_format's measurement mode generated, next to heaptrace's file.

    ./test_format --measure 1460000 DIR
    python3 compare_pickle.py DIR/depth1_unsorted.raw DIR/depth1_unsorted.htsnap

The .raw file is test_format's plain dump of the ht_snap arrays (five u64
counts: strings, frames, tracebacks, traces, traceback_limit; then the
arrays in struct order).  This script rebuilds the same snapshot as a
tracemalloc.Snapshot, sharing one tuple per traceback as tracemalloc itself
does, and pickles it the way Snapshot.dump does.
"""
import array
import os
import pickle
import sys
import tracemalloc


def read_raw(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(code, count):
        nonlocal pos
        a = array.array(code)
        n = a.itemsize * count
        a.frombytes(data[pos:pos + n])
        pos += n
        return a

    nstr, nfr, ntb, ntr, limit = take("Q", 5)
    if limit >= 1 << 63:
        limit -= 1 << 64
    str_off = take("Q", nstr + 1)
    blob = data[pos:pos + str_off[-1]]
    pos += str_off[-1]
    names = [blob[str_off[i]:str_off[i + 1]].decode("utf-8", "surrogatepass")
             for i in range(nstr)]
    frame_file = take("I", nfr)
    frame_line = take("I", nfr)
    tb_off = take("I", ntb + 1)
    tb_frames = take("I", tb_off[-1])
    tb_total = take("i", ntb)
    domain = take("I", ntr)
    size = take("Q", ntr)
    tb = take("I", ntr)
    frames = [(names[frame_file[i]], frame_line[i]) for i in range(nfr)]
    tbs = [tuple(frames[k] for k in tb_frames[tb_off[i]:tb_off[i + 1]])
           for i in range(ntb)]
    totals = [None if t == -1 else t for t in tb_total]
    traces = [(domain[i], size[i], tbs[tb[i]], totals[tb[i]])
              for i in range(ntr)]
    return tracemalloc.Snapshot(traces, limit), ntr


def main():
    snap, ntr = read_raw(sys.argv[1])
    pickled = len(pickle.dumps(snap, pickle.HIGHEST_PROTOCOL))
    print(f"tracemalloc pickle: {pickled} bytes = {pickled / ntr:.2f} bytes/trace")
    if len(sys.argv) > 2:
        ours = os.path.getsize(sys.argv[2])
        print(f"heaptrace file:     {ours} bytes = {ours / ntr:.2f} bytes/trace"
              f" ({pickled / ours:.1f}x smaller)")


if __name__ == "__main__":
    main()
