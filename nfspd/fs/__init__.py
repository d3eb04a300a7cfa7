"""The file-system layer: what every protocol front-end calls.

NFSv2 and NFSv3 (and next NFSv4.1) handlers call MetaFS (metafs.py) with
handle bytes and a Caller and get plain values or an FsError back, the way
Linux nfsd's procedures call its vfs.c. The modules are layers, from the
bottom; each imports only modules listed before it:

    types.py      the values taken and returned, FsError and the errno mapping
    access.py     permission decisions the kernel cannot make for us
    syscalls.py   utimensat, fchownat, name_to_handle_at/open_by_handle_at,
                  sync_file_range, syncfs
    journal.py    whether a directory's fsync writes an inode made in it too
    creds.py      acting as the caller (setfsuid/setfsgid/setgroups, per thread)
    handles.py    file handles and the cache of the objects they opened
    metafiles.py  reading, caching and writing the metafiles
    commit.py     group commit: namespace changes made durable many to a flush
    objects.py    handle -> open object, stat -> attributes, last links
    listings.py   directory listings, READDIR cookies and paging
    attrcache.py  the count of changes, and READDIRPLUS lookups kept while none
    dirplus.py    the lookups of a READDIRPLUS page, a stat per entry at most
    inflight.py   the WRITEs on their way to the data, which truncations wait for
    fileio.py     READ/WRITE/COMMIT plans over the data path, truncate settling
    metafs.py     MetaFS: the namespace operations, and the one entry point
"""
