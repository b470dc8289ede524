#!/usr/bin/env python3
"""HDiffPatch as a peer of `romdelta bench`, through the PyPI package hdiffpatch.

    hdiffpatch-peer.py diff  OLD NEW PATCH    write PATCH that turns OLD into NEW
    hdiffpatch-peer.py apply OLD NEW PATCH    write NEW from OLD and PATCH

The settings are those of `hdiffz -m-6 -c-zstd-21-24`, HDiffPatch's
best-compressing mode: `hdiffpatch.diff` calls the library's in-memory
`create_compressed_diff` (the `-m` mode) with its default match score 6, and
compresses with zstd at level 21 and a 2^24-byte window. `diff` checks the
patch by applying it, as hdiffz does unless given `-d`. The package reads
OLD, NEW and PATCH whole into memory; that is what is measured.
"""

import sys

import hdiffpatch

ZSTD = hdiffpatch.ZStdConfig(level=21, window=24, threads=2)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main(argv):
    if len(argv) != 5 or argv[1] not in ("diff", "apply"):
        sys.stderr.write(__doc__)
        return 2
    command, old, new, patch = argv[1:]
    if command == "diff":
        write(patch, hdiffpatch.diff(read(old), read(new), ZSTD, validate=True))
    else:
        write(new, hdiffpatch.apply(read(old), read(patch)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
