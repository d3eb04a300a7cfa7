"""The shared runtime: I/O helpers that more than one daemon (or a daemon and
the admin tools) use. Sockets, files, threads, signals and clocks live here;
the rest of ``common/`` is pure codecs that turn bytes into objects and back.

Nothing here imports a daemon, ``tools/`` or ``tests/``.
"""
