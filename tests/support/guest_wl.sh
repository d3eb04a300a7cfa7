# Workloads run by the kernel-client guests (busybox sh), sourced by /init.
# Each prints "R key value..." lines; the host computes the values it expects
# on its own (tests/e2e/expect.py) and compares. The host runs each command
# under `set -e`, so a failing step fails the workload with its output.

R() { k=$1; shift; echo "R $k $*"; }
h() { sha256sum "$1" | cut -d' ' -f1; }
hs() { sha256sum | cut -d' ' -f1; }
# Flush dirty pages to the server and forget cached pages and unused inodes,
# so what is read next comes from the server, not from this client's cache.
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# nfs_mount VERS PROTO MOUNTPROTO SERVER EXPORT MNT [MORE_OPTIONS]
# What mount.nfs hands the kernel, handed to it by busybox's mount with no
# helper (-i): ports from the server's portmapper, MOUNT over MOUNTPROTO,
# no locking. A bare `mount -t nfs` runs nfs-utils' mount.nfs instead.
nfs_mount() {
    mkdir -p "$6"
    o="vers=$1,proto=$2,mountproto=$3,nolock,addr=$4"
    [ -n "$7" ] && o="$o,$7"
    busybox mount -i -t nfs -o "$o" "$4:$5" "$6"
}

# Files of the given sizes, prefixes of /data/rand.
wl_sizes() {
    d=$1; shift
    mkdir -p "$d"
    for n in "$@"; do head -c "$n" /data/rand > "$d/f$n"; done
    dropcaches
    wl_sizes_verify "$d" "$@"
}
wl_sizes_verify() {
    d=$1; shift
    for n in "$@"; do R "size.$n" "$(stat -c %s "$d/f$n")" "$(h "$d/f$n")"; done
}

# A chain of DEPTH directories with a file at each level.
wl_tree() {
    d=$1; depth=$2
    p=$d/tree; i=0
    while [ $i -lt "$depth" ]; do p=$p/d$i; i=$((i + 1)); done
    mkdir -p "$p"
    p=$d/tree; i=0
    while [ $i -lt "$depth" ]; do echo "level $i" > "$p/file$i"; p=$p/d$i; i=$((i + 1)); done
    dropcaches
    wl_tree_verify "$d" "$depth"
}
wl_tree_verify() {
    d=$1; depth=$2
    R tree.list "$(cd "$d" && find tree | sort | hs)"
    p=$d/tree; i=0
    while [ $i -lt $((depth - 1)) ]; do p=$p/d$i; i=$((i + 1)); done
    R tree.deepest "$(cat "$p/file$((depth - 1))")"
}

# Renames: a file across directories, a directory with contents, over an
# existing file, and an empty directory into a moved one.
wl_rename() {
    d=$1
    mkdir -p "$d/a/sub" "$d/b" "$d/emptydir"
    echo one > "$d/a/f1"
    echo two > "$d/a/sub/f2"
    echo three > "$d/target"
    echo victim > "$d/v"
    mv "$d/a/f1" "$d/b/g1"
    mv "$d/a" "$d/b/a2"
    mv "$d/target" "$d/v"
    mv "$d/emptydir" "$d/b/a2/sub2"
    mv "$d/b/g1" "$d/b/g1-renamed-with-a-much-longer-name"
    dropcaches
    wl_rename_verify "$d"
}
wl_rename_verify() {
    d=$1
    R ren.list "$(cd "$d" && find . | sort | tr '\n' ' ')"
    R ren.g1 "$(cat "$d/b/g1-renamed-with-a-much-longer-name")"
    R ren.f2 "$(cat "$d/b/a2/sub/f2")"
    R ren.v "$(cat "$d/v")"
    R ren.parent "$(stat -c %i "$d/b/a2/sub/..")" "$(stat -c %i "$d/b/a2")"
}

# Hard links and symbolic links.
wl_links() {
    d=$1
    mkdir -p "$d"
    echo data > "$d/f"
    ln "$d/f" "$d/hl"
    ln -s f "$d/sl"
    ln -s /nonexistent/target "$d/dangling"
    ln -s "$(head -c 200 /dev/zero | tr '\0' x)" "$d/longlink"
    mkdir "$d/sub"
    ln -s ../f "$d/sub/up"
    dropcaches
    R links.nlink "$(stat -c %h "$d/f")" "$(stat -c %h "$d/hl")"
    R links.sameino "$([ "$(stat -c %i "$d/f")" = "$(stat -c %i "$d/hl")" ] && echo yes || echo no)"
    R links.type "$(stat -c %F "$d/sl" | tr ' ' _)" "$(stat -c %F "$d/hl" | tr ' ' _)"
    R links.readlink "$(readlink "$d/sl")" "$(readlink "$d/dangling")"
    R links.long "$(readlink "$d/longlink" | hs)"
    R links.through "$(cat "$d/sl")" "$(cat "$d/sub/up")"
    echo more >> "$d/hl"
    rm "$d/f"
    dropcaches
    R links.afterrm "$(stat -c %h "$d/hl")" "$(cat "$d/hl" | tr '\n' ' ')"
    R links.dangling_now "$(cat "$d/sl" 2>/dev/null || echo ENOENT)"
}

# chmod, chown, touch.
wl_attrs() {
    d=$1
    mkdir -p "$d"
    : > "$d/f"
    chmod 0640 "$d/f"
    mkdir "$d/dir"
    chmod 0705 "$d/dir"
    : > "$d/g"
    chmod 4755 "$d/g"
    chown 1234:5678 "$d/g"
    : > "$d/o"
    chown 4321 "$d/o"
    chgrp 8765 "$d/o"
    touch -d "2001-02-03 04:05:06" "$d/f"
    dropcaches
    R attr.mode "$(stat -c %a "$d/f")" "$(stat -c %a "$d/dir")"
    R attr.owner "$(stat -c %u:%g "$d/g")" "$(stat -c %u:%g "$d/o")"
    # chown by root clears set-user-ID on a regular file (POSIX allows, Linux does)
    R attr.suid "$(stat -c %a "$d/g")"
    R attr.mtime "$(stat -c %Y "$d/f")"
    # Without a time, touch asks for the server's clock (this guest's drifts).
    touch "$d/f"
    dropcaches
    R attr.touch_now "$(stat -c %Y "$d/f")"
}

# atime set alone (touch -a), read back after the caches are dropped.
wl_atime() {
    d=$1
    mkdir -p "$d"
    echo x > "$d/a"
    touch -a -d "1999-12-31 23:59:58" "$d/a"
    dropcaches
    R atime "$(stat -c %X "$d/a")" "$(stat -c %X "$d/a")"
}

# truncate shrink and grow; append.
wl_truncate() {
    d=$1
    mkdir -p "$d"
    head -c 100000 /data/rand > "$d/t"
    truncate -s 5000 "$d/t"
    dropcaches
    R trunc.shrink "$(stat -c %s "$d/t")" "$(h "$d/t")"
    truncate -s 200000 "$d/t"
    dropcaches
    R trunc.grow "$(stat -c %s "$d/t")" "$(h "$d/t")"
    truncate -s 0 "$d/t"
    dropcaches
    R trunc.zero "$(stat -c %s "$d/t")"
}
wl_append() {
    d=$1
    mkdir -p "$d"
    : > "$d/a"
    for i in $(seq 100); do echo "line $i" >> "$d/a"; done
    head -c 70000 /data/rand >> "$d/a"
    echo end >> "$d/a"
    dropcaches
    R append "$(stat -c %s "$d/a")" "$(h "$d/a")"
}

# One 4 KiB block at GIB GiB (past 4 GiB: 64-bit offsets); the hole reads as zeros.
wl_sparse() {
    d=$1; gib=$2
    mkdir -p "$d"
    head -c 4096 /data/rand | dd of="$d/s" bs=4096 seek=$((gib * 262144)) conv=notrunc 2>/dev/null
    dropcaches
    R sparse.size "$(stat -c %s "$d/s")"
    R sparse.tail "$(dd if="$d/s" bs=4096 skip=$((gib * 262144)) count=1 2>/dev/null | hs)"
    R sparse.hole "$(dd if="$d/s" bs=4096 skip=$((gib * 262144 - 1)) count=1 2>/dev/null | hs)"
    R sparse.head "$(dd if="$d/s" bs=4096 count=1 2>/dev/null | hs)"
}

# N entries in one directory, listed completely (READDIR/READDIRPLUS cookies).
wl_bigdir() {
    d=$1/big; n=$2
    mkdir -p "$d"
    seq "$n" | sed "s|^|$d/entry-with-a-longish-name-|" | xargs touch
    dropcaches
    wl_bigdir_verify "$1"
}
wl_bigdir_verify() {
    d=$1/big
    R bigdir.count "$(ls -a "$d" | grep -c entry-)"
    R bigdir.list "$(ls "$d" | sort | hs)"
    R bigdir.stat "$(ls -l "$d" | grep -c '^-rw')"
}

wl_rmrf() {
    d=$1
    rm -rf "$d"
    R rmrf.gone "$([ -e "$d" ] && echo present || echo gone)"
}

wl_df() {
    df -Pk "$1" | tail -n 1 | {
        read fs total used avail pct mnt
        R df "$total" "$used" "$avail"
    }
}

# lock_hold NAME [-w] posix|flock r|w FILE [START LEN]: nfsp-lock (-h) keeps
# its lock in the background until lock_release NAME. Prints what it said
# ("locked", "busy ..."); with -w it may wait, so this returns at once and
# lock_said NAME tells later.
lock_hold() {
    n=$1; shift
    nfsp-lock -h "$@" </dev/null >"/tmp/lock.$n" 2>&1 &
    echo $! >"/tmp/lock.$n.pid"
    case " $* " in *" -w "*) return 0 ;; esac
    i=0
    while [ ! -s "/tmp/lock.$n" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    cat "/tmp/lock.$n"
}
lock_said() { cat "/tmp/lock.$1"; }
# Ends the holder and returns once it has exited (its exit gave the lock
# back); it stays a zombie of /init, which holds nothing.
lock_release() {
    p=$(cat "/tmp/lock.$1.pid")
    kill "$p" 2>/dev/null || true
    while [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; do
        sleep 0.1
    done
    rm -f "/tmp/lock.$1" "/tmp/lock.$1.pid"
}
