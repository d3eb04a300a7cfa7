"""What the guest workloads (tests/support/guest_wl.sh) must report, computed
on the host from the same inputs, independently of any NFS code."""

import calendar
import hashlib
import random

RAND_SIZE = 20 * 1024 * 1024


def rand_data(size=RAND_SIZE, seed=20020304):
    return random.Random(seed).randbytes(size)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def lines_sha(lines):
    return sha("".join(f"{x}\n" for x in lines).encode())


def sizes(rand, ns):
    return {f"size.{n}": f"{n} {sha(rand[:n])}" for n in ns}


def tree(depth):
    paths, p = ["tree"], "tree"
    for i in range(depth):
        paths.append(f"{p}/file{i}")
        p = f"{p}/d{i}"
        paths.append(p)
    return {"tree.list": lines_sha(sorted(paths)), "tree.deepest": f"level {depth - 1}"}


def rename():
    names = [".", "./b", "./b/a2", "./b/a2/sub", "./b/a2/sub/f2", "./b/a2/sub2",
             "./b/g1-renamed-with-a-much-longer-name", "./v"]
    return {"ren.list": " ".join(sorted(names)) + " ",
            "ren.g1": "one", "ren.f2": "two", "ren.v": "three"}


def links():
    return {"links.nlink": "2 2", "links.sameino": "yes",
            "links.type": "symbolic_link regular_file",
            "links.readlink": "f /nonexistent/target",
            "links.long": sha(b"x" * 200 + b"\n"),
            "links.through": "data data",
            "links.afterrm": "1 data more ",
            "links.dangling_now": "ENOENT"}


def attrs():
    return {"attr.mode": "640 705", "attr.owner": "1234:5678 4321:8765",
            "attr.suid": "755",
            "attr.mtime": str(calendar.timegm((2001, 2, 3, 4, 5, 6)))}


def atime():
    t = str(calendar.timegm((1999, 12, 31, 23, 59, 58)))
    return {"atime": f"{t} {t}"}


def truncate(rand):
    shrunk = rand[:5000]
    return {"trunc.shrink": f"5000 {sha(shrunk)}",
            "trunc.grow": f"200000 {sha(shrunk + bytes(195000))}",
            "trunc.zero": "0"}


def append(rand):
    data = b"".join(f"line {i}\n".encode() for i in range(1, 101)) + rand[:70000] + b"end\n"
    return {"append": f"{len(data)} {sha(data)}"}


def sparse(rand, gib):
    block = rand[:4096]
    return {"sparse.size": str(gib * 2**30 + 4096), "sparse.tail": sha(block),
            "sparse.hole": sha(bytes(4096)), "sparse.head": sha(bytes(4096))}


def bigdir(n):
    names = [f"entry-with-a-longish-name-{i}" for i in range(1, n + 1)]
    return {"bigdir.count": str(n), "bigdir.list": lines_sha(sorted(names)),
            "bigdir.stat": str(n)}


def diff(got, want):
    """The keys whose values differ, as readable lines ('' when none)."""
    out = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            out.append(f"  {k}: got {got.get(k)!r}, expected {want.get(k)!r}")
    return "\n".join(out)
