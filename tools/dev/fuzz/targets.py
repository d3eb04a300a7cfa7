"""The codec fuzz targets: each decodes untrusted bytes the way a daemon does.

``TARGETS[name]`` is a Target: ``run(data)`` returns normally for any input the
codec handles correctly (decoded, or refused with its own error) and raises
for a finding; ``seeds()`` yields valid messages built with the codecs
themselves, so the fuzzer starts from real traffic.

Properties checked beyond "no foreign exception":

- XDR types: what decodes re-encodes, and the re-encoding decodes to an equal
  value (a server must be able to echo what it accepted).
- RPC: an error's prepared reply is itself a decodable REPLY with the call's
  xid; decode_call's fast path decides exactly as the careful path.
- Record marking and iod framing: the bytes held between feeds stay below the
  record/frame bound however long the stream.
- iod protocol: what decodes encodes to a frame decoding to the same Message;
  an unauthenticated (unsigned) message is a PING or PONG without a stamp; the
  ReplayGuard accepts a stamp at most once and tracks at most max_senders.
- Text formats (exports, iods.conf, key file, universal addresses): what parses
  formats back to the same value; export paths are file names nfspd can open.
- metafile: decode(x).encode() == x (the format is canonical).
- NFSv4 COMPOUND: only the last operation decoded may be refused, at most
  NFS4_COMPOUND_MAX_OPS are, and every one can be answered; fattr4 values
  survive encode_attrs/decode_attrs.

The whole dispatch path (bytes in, reply or none out) is tools/dev/fuzz/dispatch.py.
"""

import hashlib
import hmac
import os
import struct
import sys
from collections import deque

from common import exports as exports_mod
from common import (
    iodproto, iodsconf, keyfile, metafile, mount, nfs2, nfs3, nfs4, portmap, rpc, xdr,
)
from common.xdr import Unpacker, XdrError, decode, encode


class Target:
    """``run(data)``; ``seeds()``; ``max_len`` for libFuzzer; ``alloc`` (a, b):
    decoding n bytes may allocate at most a*n + b bytes. ``prepare()`` does
    what the first call would do once for all (imports, type tables, the
    dispatcher's world), so that it is not counted against the first input."""

    def __init__(self, name, run, seeds, max_len=4096, alloc=(64, 1 << 20), doc="",
                 setup=None):
        self.name, self.run, self.seeds = name, run, seeds
        self.max_len, self.alloc = max_len, alloc
        self.doc = doc or _summary(run.__doc__ or "")
        self._setup = setup
        self._prepared = False

    def prepare(self):
        if self._prepared:
            return
        if self._setup is not None:
            self._setup()
        else:
            # Every seed once: whatever a decoder builds lazily is built now.
            for data in self.seeds():
                try:
                    self.run(data)
                except Exception:
                    pass  # a seed that shows a known bug; the replay reports it
        self._prepared = True


TARGETS = {}


def _summary(doc):
    """The docstring's first sentence, on one line."""
    text = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    return text.split(". ")[0].rstrip(".")


def target(name, seeds, **kw):
    def register(fn):
        TARGETS[name] = Target(name, fn, seeds, **kw)
        return fn
    return register


# --- valid values of any XDR type (seeds) -----------------------------------------

_MAX_SAMPLES = 48


def samples(t, over=None):
    """Several valid values of XDR type ``t``: every union arm, present and
    absent optionals, empty and non-empty lists. ``over`` maps id(type) to the
    values to use for that type wherever it occurs (real handles, names)."""
    if over and id(t) in over:
        return over[id(t)]
    if isinstance(t, type) and issubclass(t, xdr.Union):
        out = []
        for disc, arm in t.arms.items():
            out += [t(disc, body) for body in samples(arm, over)[:8]]
        if t.default is not None:
            extra = [m for m in t.switch.enum_cls if m not in t.arms][:2] \
                if isinstance(t.switch, xdr.Enum) else [99]
            out += [t(d, samples(t.default, over)[0]) for d in extra]
        return out[:_MAX_SAMPLES]
    if isinstance(t, type) and issubclass(t, xdr.Struct):
        per_field = [samples(ft, over) for _, ft in t._fields]
        base = [vals[0] for vals in per_field]
        out = [t(*base)]
        for i, vals in enumerate(per_field):
            for v in vals[1:4]:
                out.append(t(*base[:i], v, *base[i + 1:]))
        return out[:_MAX_SAMPLES]
    if t is xdr.Bool:
        return [True, False]
    if t is xdr.Void:
        return [None]
    if isinstance(t, xdr._Prim):
        return [1, t.hi, max(t.lo, -1)]
    if isinstance(t, xdr.Enum):
        return list(t.enum_cls)
    if isinstance(t, xdr.FixedOpaque):
        return [bytes(range(t.n)) if t.n <= 256 else b"\x01" * t.n]
    if isinstance(t, xdr.Opaque):
        return [b"name"[:t.maxlen] if t.maxlen is not None else b"name", b""]
    if isinstance(t, xdr.Optional):
        return [samples(t.elem, over)[0], None]
    if isinstance(t, (xdr.Array, xdr.LinkedList)):
        v = samples(t.elem, over)[0]
        n = 2 if getattr(t, "maxlen", None) is None else min(2, t.maxlen)
        return [[v] * n, []]
    if isinstance(t, portmap._FixedArray):
        return [[samples(t.elem, over)[0]] * t.n]
    raise TypeError(f"no samples for XDR type {t!r}")


def encodings(t, over=None):
    """The distinct encodings of samples(t, over)."""
    seen = []
    for v in samples(t, over):
        try:
            b = encode(t, v)
        except XdrError:
            continue
        if b not in seen:
            seen.append(b)
    return seen


# --- XDR protocol types -------------------------------------------------------------


def _unique(types):
    out = []
    for t in types:
        if not any(t is o for o in out):
            out.append(t)
    return out


def _module_types(module):
    return [getattr(module, n) for n in module.__all__
            if hasattr(getattr(module, n), "unpack") and hasattr(getattr(module, n), "pack")
            and n not in ("Struct", "Union")]


def _program_types(program):
    types = []
    for procs in program.versions.values():
        for p in procs.values():
            types += [p.args_type, p.res_type]
    return types


def nfs2_types():
    return _unique([t for pair in nfs2.PROCEDURE_TYPES.values() for t in pair])


def nfs3_types():
    return _unique([t for _, a, r in nfs3.PROCEDURES.values() for t in (a, r)])


def nfs4_types():
    return _unique([t for pair in nfs4.OPERATIONS.values() for t in pair]
                   + [nfs4.nfs_argop4, nfs4.nfs_resop4, nfs4.COMPOUND4res]
                   + list(nfs4.FATTR4_TYPES.values()))


def mount_types():
    from nfspd import mountd
    return _unique(_program_types(mountd.program(None)) + _module_types(mount))


def portmap_types():
    from nfspd import portmapper
    return _unique(_program_types(portmapper.program(portmapper.PortTable()))
                   + _module_types(portmap))


def _xdr_target(name, types_fn):
    """Byte 0 picks one of the protocol's argument/result types; the rest is
    decoded the way the dispatcher does (unpack from a memoryview, trailing
    bytes allowed), then must round-trip through encode/decode."""
    cache = []

    def types():
        if not cache:
            cache.extend(types_fn())
        return cache

    def run(data):
        ts = types()
        if not data:
            return
        t = ts[data[0] % len(ts)]
        try:
            value = t.unpack(Unpacker(memoryview(data)[1:]))
        except XdrError:
            return
        again = encode(t, value)
        if decode(t, again) != value:
            raise AssertionError(f"{t!r}: {value!r} does not survive encode/decode")

    def seeds():
        for i, t in enumerate(types()):
            for b in encodings(t):
                yield bytes([i]) + b

    run.__doc__ = f"every {name} argument and result type (byte 0 picks the type)"
    TARGETS[name] = Target(name, run, seeds)
    return types


nfs2_all = _xdr_target("nfs2", nfs2_types)
nfs3_all = _xdr_target("nfs3", nfs3_types)
mount_all = _xdr_target("mount", mount_types)
portmap_all = _xdr_target("portmap", portmap_types)
nfs4_all = _xdr_target("nfs4", nfs4_types)


# --- NFSv4 COMPOUND and fattr4 ----------------------------------------------------------

_SEQUENCE = nfs4.nfs_argop4(nfs4.nfs_opnum4.OP_SEQUENCE,
                            nfs4.SEQUENCE4args(bytes(range(16)), 1, 0, 0, False))


def _nfs4_compound_seeds():
    for op, (args, _) in nfs4.OPERATIONS.items():
        for body in samples(args)[:3]:
            c = nfs4.COMPOUND4args(b"", 2, [_SEQUENCE, nfs4.nfs_argop4(op, body)])
            yield nfs4.encode_compound(c)
    yield nfs4.encode_compound(nfs4.COMPOUND4args(b"tag", 1, [_SEQUENCE] * 3))


@target("nfs4_compound", _nfs4_compound_seeds)
def nfs4_compound(data):
    """nfs4.decode_compound, as the server decodes a COMPOUND: only the last
    operation may be refused (NFS4ERR_BADXDR or OP_ILLEGAL), at most
    NFS4_COMPOUND_MAX_OPS are decoded, the operations decoded re-encode to a
    COMPOUND decoding to the same, and every one can be answered with an error."""
    try:
        args = nfs4.decode_compound(data)
    except nfs4.CompoundTooLong as e:
        if len(e.compound.argarray) > 1 or e.opcount <= nfs4.NFS4_COMPOUND_MAX_OPS:
            raise AssertionError(f"{e!r} with {len(e.compound.argarray)} operations") from None
        return
    except XdrError:
        return
    ops = args.argarray
    if len(ops) > nfs4.NFS4_COMPOUND_MAX_OPS:
        raise AssertionError(f"{len(ops)} operations decoded")
    if any(nfs4.argop_status(op) is not None for op in ops[:-1]):
        raise AssertionError("decoding went on after a refused operation")
    good = nfs4.COMPOUND4args(args.tag, args.minorversion,
                              [op for op in ops if nfs4.argop_status(op) is None])
    if nfs4.decode_compound(nfs4.encode_compound(good)) != good:
        raise AssertionError(f"{good!r} does not survive encode/decode")
    for op in ops:
        status = nfs4.argop_status(op) or nfs4.nfsstat4.NFS4ERR_NOTSUPP
        nfs4.encode_resop(nfs4.resop_error(op.disc, status))


def _nfs4_attrs_seeds():
    for attr, t in sorted(nfs4.FATTR4_TYPES.items()):
        for v in samples(t)[:3]:
            yield encode(nfs4.fattr4, nfs4.encode_attrs({attr: v}))


@target("nfs4_attrs", _nfs4_attrs_seeds)
def nfs4_attrs(data):
    """nfs4.decode_attrs of a fattr4: values that decode encode back (with the
    shortest bitmap) to the same values."""
    try:
        values = nfs4.decode_attrs(decode(nfs4.fattr4, data))
    except XdrError:
        return
    again = nfs4.encode_attrs(values)
    if nfs4.decode_attrs(again) != values:
        raise AssertionError(f"{values!r} does not survive encode_attrs/decode_attrs")


def _uaddr_seeds():
    for text in (b"10.0.0.1.8.1", b"::1.0.111", b"fe80::1%eth0.255.255", b"1.2.3.4.0.0"):
        yield b"\x00" + text
    yield b"\x01" + portmap.taddr_from_uaddr("192.168.1.20.8.1")
    yield b"\x01" + portmap.taddr_from_uaddr("2001:db8::7.3.0")


@target("uaddr", _uaddr_seeds)
def uaddr(data):
    """rpcbind's universal and transport addresses (byte 0 even: parse_uaddr,
    odd: uaddr_from_taddr); what parses formats back to itself."""
    if not data:
        return
    try:
        if data[0] & 1:
            text = portmap.uaddr_from_taddr(data[1:])
            ip, port = portmap.parse_uaddr(text)
        else:
            ip, port = portmap.parse_uaddr(data[1:])
            text = portmap.uaddr_from(ip, port)
    except portmap.UaddrError:
        return
    if portmap.parse_uaddr(text) != (ip, port):
        raise AssertionError(f"{text!r} does not parse back to {(ip, port)!r}")
    portmap.taddr_from_uaddr(text)


# --- ONC RPC ---------------------------------------------------------------------------

_CREDS = [None, rpc.AuthSys(0, b"", 0, 0, []),
          rpc.AuthSys(0x5EED, b"client.example", 1000, 1000, list(range(16))),
          rpc.AuthSys(1, b"m" * 255, 0xFFFFFFFF, 0xFFFFFFFE, [0])]


def _rpc_call_seeds():
    for i, cred in enumerate(_CREDS):
        yield rpc.encode_call(i + 1, nfs3.NFS_PROGRAM, 3, 1, encode(nfs3.nfs_fh3, b"h" * 32), cred)
    yield rpc.encode_call(7, mount.MOUNT_PROGRAM, 3, 1, encode(mount.dirpath, b"/export"))
    yield rpc.encode_call(8, portmap.PMAP_PROGRAM, 2, 3, encode(portmap.mapping,
                                                                portmap.mapping(100003, 3, 6, 0)))
    base = bytearray(rpc.encode_call(9, 100003, 3, 0, b"", _CREDS[1]))
    base[8:12] = (3).to_bytes(4, "big")  # RPC version 3: RPC_MISMATCH
    yield bytes(base)
    base = bytearray(rpc.encode_call(10, 100003, 3, 0))
    base[24:28] = (6).to_bytes(4, "big")  # RPCSEC_GSS: AUTH_BADCRED
    yield bytes(base)


@target("rpc_call", _rpc_call_seeds)
def rpc_call(data):
    """rpc.decode_call: a CALL, or RpcError whose prepared reply is a REPLY for
    its xid. The fast path for the usual shape of call must decide exactly as
    the careful one (rpc._decode_call) does, whatever the AUTH_SYS memo holds."""
    try:
        call = rpc.decode_call(data)
    except rpc.RpcError as e:
        if e.reply is not None:
            r = rpc.decode_reply(e.reply)
            if r.xid != rpc.peek_xid(data):
                raise AssertionError(f"error reply for xid {r.xid:#x}, "
                                     f"call had {rpc.peek_xid(data):#x}")
        careful = _careful_call(data)
        if not isinstance(careful, rpc.RpcError) or careful.reply != e.reply:
            raise AssertionError(f"decode_call refused what the careful path gives as {careful!r}")
        return
    if len(call.cred_body) > rpc.MAX_AUTH_BYTES or len(call.verf_body) > rpc.MAX_AUTH_BYTES:
        raise AssertionError("oversized opaque_auth accepted")
    if call.cred is not None and rpc.AuthSys.decode(call.cred.encode()) != call.cred:
        raise AssertionError(f"{call.cred!r} does not round-trip")
    careful = _careful_call(data)
    if isinstance(careful, rpc.RpcError) or _fields(careful) != _fields(call):
        raise AssertionError(f"decode_call gives {_fields(call)!r}, the careful path {careful!r}")


def _careful_call(data):
    decode = getattr(rpc, "_decode_call", rpc.decode_call)  # no fast path (any more)?
    try:
        return decode(data)
    except rpc.RpcError as e:
        return e


def _fields(call):
    return (call.xid, call.prog, call.vers, call.proc, call.cred_flavor, bytes(call.cred_body),
            call.cred, call.verf_flavor, bytes(call.verf_body), bytes(call.args))


@target("authsys", lambda: (c.encode() for c in _CREDS if c is not None))
def authsys(data):
    """rpc.AuthSys.decode: strict authsys_parms, re-encodable."""
    try:
        cred = rpc.AuthSys.decode(data)
    except XdrError:
        return
    if len(cred.gids) > rpc.AUTHSYS_MAX_GIDS or len(cred.machinename) > rpc.AUTHSYS_MAX_MACHINENAME:
        raise AssertionError(f"out-of-spec credential accepted: {cred!r}")
    if rpc.AuthSys.decode(cred.encode()) != cred:
        raise AssertionError(f"{cred!r} does not round-trip")


def _rpc_reply_seeds():
    A = rpc.accept_stat
    yield rpc.reply_success(1, b"\0\0\0\0")
    yield rpc.reply_success(2)
    for stat in (A.PROG_UNAVAIL, A.PROC_UNAVAIL, A.GARBAGE_ARGS, A.SYSTEM_ERR):
        yield rpc.reply_accepted_error(3, stat)
    yield rpc.reply_prog_mismatch(4, 2, 3)
    yield rpc.reply_rpc_mismatch(5)
    yield rpc.reply_auth_error(6, rpc.auth_stat.AUTH_BADCRED)


@target("rpc_reply", _rpc_reply_seeds)
def rpc_reply(data):
    """rpc.decode_reply (the client side: tools, the portmapper's rpcbind client)."""
    try:
        rpc.decode_reply(data)
    except XdrError:
        return


def _record_seeds():
    call = rpc.encode_call(1, nfs3.NFS_PROGRAM, 3, 0)
    # max_record 1024, chunks of 7 bytes
    yield b"\x03\xff\x06" + rpc.encode_record(call)
    frag = len(call) // 2
    two = ((frag).to_bytes(4, "big") + call[:frag]
           + (rpc.LAST_FRAGMENT | len(call) - frag).to_bytes(4, "big") + call[frag:])
    yield b"\x00\x40\x00" + two
    yield b"\x00\x10\x01" + rpc.encode_record(b"x" * 100)  # too large


RECORD_REPEAT = 8


def _held(obj):
    """Bytes of the object's attributes, counting list elements and the
    attributes of the objects it holds: whatever a reader keeps between
    feeds, without knowing its private names."""
    total = 0
    for v in _attributes(obj):
        total += sys.getsizeof(v)
        if isinstance(v, (list, tuple, deque)):
            total += sum(sys.getsizeof(x) for x in v)
        elif _attributes(v):
            total += _held(v)
    return total


def _attributes(obj):
    names = getattr(type(obj), "__slots__", ())
    if isinstance(names, str):
        names = (names,)
    values = [getattr(obj, name) for name in names if hasattr(obj, name)]
    return values + list(getattr(obj, "__dict__", {}).values())


@target("record", _record_seeds)
def record(data):
    """rpc.RecordReader.feed: bytes 0-1 set max_record (1..8192), byte 2 the
    chunk size; the rest is fed RECORD_REPEAT times, as a long TCP stream.
    Records never exceed max_record; the reader never holds more than one
    record's worth."""
    if len(data) < 3:
        return
    max_record = 1 + int.from_bytes(data[:2], "big") % 8192
    chunk = 1 + data[2] % 64
    stream = data[3:]
    reader = rpc.RecordReader(max_record)
    try:
        for _ in range(RECORD_REPEAT):
            for i in range(0, len(stream), chunk):
                for rec in reader.feed(stream[i:i + chunk]):
                    if len(rec) > max_record:
                        raise AssertionError(f"record of {len(rec)} bytes > {max_record}")
                if reader.pending() >= max_record + 4:
                    raise AssertionError(f"holding {reader.pending()} bytes, "
                                         f"max_record {max_record}")
                held = _held(reader)
                if held > 2 * max_record + 4096:
                    raise AssertionError(f"the reader holds {held} bytes of objects, "
                                         f"max_record {max_record}")
    except rpc.RecordTooLarge:
        return


# --- iod protocol ------------------------------------------------------------------------

KEYS = iodproto.Keys((1, b"K" * 32), [(2, b"L" * 32)])
Op, Message = iodproto.Op, iodproto.Message
_STAMP = (0x5EED, 7, 1.7e9)
_FILES = [(i, 2**64 - 1 - i) for i in range(10)]


def iod_messages():
    """Real traffic: what nfspd, unlinkd and the tools send and the iods answer."""
    return [
        Message(Op.PING, 1, _STAMP, spoof_from=("10.0.0.1", 2049)),
        Message(Op.PING, 1),
        Message(Op.PONG, 2, version="0.1", uptime=1.5, free=10, total=20, verifier=b"v" * 8,
                time=1.7e9),
        Message(Op.READ, 3, _STAMP, ino=5, seed=2**63, offset=0, count=4096,
                client=("10.0.0.9", 700), source=("10.0.0.1", 2049), head=b"h" * 40),
        Message(Op.WRITE, 4, _STAMP, ino=5, seed=9, offset=8192, data=b"d" * 64, stable=True,
                client=None, source=None, reply=b"r" * 8),
        Message(Op.COMMIT, 5, ino=5, seed=9),
        Message(Op.TRUNCATE, 6, _STAMP, ino=5, seed=9, size=0),
        Message(Op.PURGE, 7, _STAMP, files=[(1, 2), (3, 4)]),
        Message(Op.PURGE, 7, _STAMP, files=_FILES),
        Message(Op.LIST, 8, cursor=b"c"),
        Message(Op.REPLY, 9, status=28, message="No space left on device", files=_FILES,
                data=b"x", verifier=b"v" * 8, cursor=None),
    ]


def _unsigned(m):
    """The PING/PONG as monitoring without the key sends it."""
    return Message(m.op, m.id, **m.fields())


def _frames():
    frames = [iodproto.encode(m, KEYS) for m in iod_messages()]
    frames += [iodproto.encode(_unsigned(m), None) for m in iod_messages()[1:3]]
    return frames


def _header(body, key_id, flags=0):
    return iodproto.HEADER.pack(iodproto.MAGIC, iodproto.VERSION, key_id, flags, len(body), 0)


def _check_message(msg):
    """What decoded encodes to a frame that decodes to the same message, and
    an unauthenticated message (an unsigned PING or PONG) carries nothing the
    receiver would act on: no stamp, no spoof_from."""
    if not msg.authenticated:
        if msg.op not in (Op.PING, Op.PONG):
            raise AssertionError(f"unauthenticated {msg!r} accepted")
        if msg.stamp is not None:
            raise AssertionError(f"unauthenticated {msg!r} carries a stamp: the iod would "
                                 f"record it in its ReplayGuard")
    frame = iodproto.encode(msg, KEYS if msg.authenticated else None)
    again = iodproto.decode(frame, KEYS, unsigned_ok=True)
    if again != msg or again.authenticated != msg.authenticated:
        raise AssertionError(f"{msg!r} does not round-trip")


@target("iod_frame", _frames)
def iod_frame(data):
    """iodproto.decode of a whole untrusted frame, unsigned PING/PONG allowed (as over UDP)."""
    try:
        msg = iodproto.decode(data, KEYS, unsigned_ok=True)
    except iodproto.IodProtoError:
        return
    _check_message(msg)


def _iod_body_seeds():
    for frame in _frames():
        flags = iodproto.HEADER.unpack_from(frame)[3]
        signed, _ = iodproto.frame_sizes(frame[:iodproto.HEADER.size])
        yield bytes([flags & iodproto.UNSIGNED]) + frame[iodproto.HEADER.size:
                                                         signed - iodproto.MAC_SIZE]


@target("iod_body", _iod_body_seeds, max_len=8192)
def iod_body(data):
    """iodproto.decode of a body in a frame that verifies (byte 0 odd: an
    unsigned one, else signed with a valid MAC): the msgpack parser and the
    per-op field validation, as a key holder (or anyone, unsigned) reaches them."""
    if not data:
        return
    body = data[1:]
    if data[0] & 1:
        frame = _header(body, 0, iodproto.UNSIGNED) + body + bytes(iodproto.MAC_SIZE)
    else:
        signed = _header(body, 1) + body
        frame = signed + hmac.new(KEYS.by_id[1], signed, hashlib.sha256).digest()
    try:
        msg = iodproto.decode(frame, KEYS, unsigned_ok=True)
    except iodproto.IodProtoError:
        return
    _check_message(msg)


def _iod_stream_seeds():
    frames = _frames()
    yield b"\x05" + b"".join(frames[:4])
    yield b"\x3f" + b"".join(frames[4:])
    yield b"\x00" + frames[0][:iodproto.HEADER.size]


@target("iod_stream", _iod_stream_seeds, max_len=8192)
def iod_stream(data):
    """iodproto.FrameReader over a TCP stream (byte 0: chunk size), each frame
    decoded as over TCP (signed only); the reader never holds more than one
    maximal frame."""
    if not data:
        return
    chunk = 1 + data[0] % 64
    reader = iodproto.FrameReader()
    limit = iodproto.HEADER.size + iodproto.MAX_BODY + iodproto.MAC_SIZE + iodproto.MAX_DATA
    for i in range(1, len(data), chunk):
        try:
            frames = reader.feed(data[i:i + chunk])
        except iodproto.IodProtoError:
            return
        for frame in frames:
            try:
                msg = iodproto.decode(frame, KEYS)
            except iodproto.IodProtoError:
                continue
            _check_message(msg)
        held = _held(reader)
        if held >= 2 * limit:
            raise AssertionError(f"FrameReader holds {held} bytes of objects")


_EVENT = struct.Struct(">BIhH")


def _iod_replay_seeds():
    def events(*evs):
        return b"".join(_EVENT.pack(*e) for e in evs)
    yield b"\x03\x10" + events((1, 1, 0, 0), (1, 2, 0, 1), (1, 2, 0, 0), (2, 1, 5, 0),
                               (1, 1, 0, 0), (3, 9, -59, 70), (1, 3, 0, 0))
    yield b"\x00\x00" + events(*[(s, 1, 59, 0) for s in range(6)] + [(0, 2, 0, 0)])


@target("iod_replay", _iod_replay_seeds)
def iod_replay(data):
    """iodproto.ReplayGuard.check over a sequence of stamps: bytes 0-1 set
    max_senders (1..8) and the window (1..64); then events of 9 bytes: sender
    (one byte, so that they collide), seq, the stamp's offset from now (s) and
    how far now then moves on (0.1 s). Only Stale/Replayed are raised; each
    stamp is accepted at most once; the state stays within max_senders."""
    if len(data) < 2:
        return
    max_senders, window = 1 + data[0] % 8, 1 + data[1] % 64
    guard = iodproto.ReplayGuard(max_skew=60, window=window, max_senders=max_senders,
                                 not_before=0)
    now = 1000.0
    accepted = set()
    for off in range(2, len(data) - _EVENT.size + 1, _EVENT.size):
        sender, seq, skew, step = _EVENT.unpack_from(data, off)
        stamp = iodproto.Stamp(sender, seq, now + skew)
        try:
            guard.check(stamp, now)
        except iodproto.IodProtoError:
            pass
        else:
            if stamp in accepted:
                raise AssertionError(f"{stamp} accepted twice")
            accepted.add(stamp)
        if len(guard) > max_senders:
            raise AssertionError(f"{len(guard)} senders tracked, at most {max_senders}")
        now += step / 10


# --- configuration and on-disk formats --------------------------------------------------

_EXPORTS_SEEDS = [
    "/srv/data   host1(rw,no_root_squash) 10.0.0.0/8(ro,all_squash) *.example.org(rw) *(ro)\n",
    '"/srv/with space"  -rw,async  node?.cluster  192.168.1.0/255.255.255.0(ro)\n',
    "/srv/long   a(rw) \\\n            b(rw)\n# comment\n",
    "/e [::1](rw,insecure,anonuid=-2,anongid=100,fsid=root,sec=sys:none) fe80::/10(ro)\n",
    "/x\\040y host (rw)\n/x\\040y node[0-9](ro,subtree_check,mp=/m)\n",
]


@target("exports", lambda: (s.encode() for s in _EXPORTS_SEEDS))
def exports_text(data):
    """common.exports.parse_exports, then every export matched against a few clients."""
    text = data.decode("utf-8", "surrogateescape")  # as ExportRegistry.load reads the file
    try:
        parsed = exports_mod.parse_exports(text, "fuzz")
    except exports_mod.ExportsError:
        return
    for export in parsed:
        if exports_mod.normalize_path(export.path) != export.path:
            raise AssertionError(f"export path {export.path!r} is not normalized")
        raw = os.fsencode(export.path)  # what nfspd opens
        if b"\0" in raw or os.fsdecode(raw) != export.path:
            raise AssertionError(f"export path {export.path!r} is not a file name")
        export.needs_hostname
        export.match("127.0.0.1")
        export.match("::ffff:10.1.2.3", ("node1.cluster", "host1.example.org"))
        export.match("fe80::1%eth0", "a")


_KEY_SEEDS = ["0:" + "ab" * 32 + "\n",
              "# rotation\n1:" + "00" * 40 + "\n0:" + "ff" * 32 + "\n",
              "255: " + "0123456789abcdef" * 4 + "  \n\n"]


@target("keyfile", lambda: (s.encode() for s in _KEY_SEEDS))
def keyfile_text(data):
    """common.keyfile.parse: ids 0-255, keys long enough, and written out again
    they parse to the same keys, the same one signing."""
    try:
        keys = keyfile.parse(data.decode("utf-8", "surrogateescape"), "fuzz")
    except keyfile.KeyFileError:
        return
    for kid, key in keys.by_id.items():
        if not 0 <= kid <= 255 or len(key) < keyfile.MIN_KEY_BYTES:
            raise AssertionError(f"bad key accepted: {kid}")
    text = "".join(f"{kid}:{key.hex()}\n" for kid, key in
                   [(keys.current_id, keys.current)]
                   + [(k, v) for k, v in keys.by_id.items() if k != keys.current_id])
    again = keyfile.parse(text)
    if (again.current_id, again.current, again.by_id) != (keys.current_id, keys.current,
                                                          keys.by_id):
        raise AssertionError(f"keys do not parse back from {text!r}")


def _metafile_seeds():
    mfs = [metafile.Metafile(seed=1, size=0),
           metafile.Metafile(seed=(1 << 64) - 1, size=metafile.MAX_SIZE, stripe_unit=4096,
                             layout_gen=7, create_verf=b"v" * 8, trunc_to=10)]
    for m in mfs:
        yield b"\x00" + m.encode()
        yield b"\x01" + m.encode()[:-4]


@target("metafile", _metafile_seeds)
def metafile_bytes(data):
    """Metafile.decode; byte 0 bit 0 set: the rest is a body given a valid crc
    (so the fuzzer gets past the checksum)."""
    if not data:
        return
    body = data[1:]
    if data[0] & 1:
        body = body[:metafile._BODY.size].ljust(metafile._BODY.size, b"\0")
        body += metafile._CRC.pack(metafile.zlib.crc32(body))
    try:
        m = metafile.Metafile.decode(body)
    except metafile.MetafileError:
        return
    if m.encode() != body:
        raise AssertionError(f"{m!r} is not encoded as it was decoded")


_IODS_SEEDS = ["# comment\nnode1\nnode2:2051\n10.0.0.3:2050       # after an entry\n",
               "a.b-c.example.org.:65535\n\n  192.168.1.1  \n",
               "::1\nnode1 node2\nnode1:0\n"]


@target("iodsconf", lambda: (s.encode() for s in _IODS_SEEDS))
def iods_text(data):
    """common.iodsconf.parse_iods; what it returns must parse back to itself."""
    try:
        iods = iodsconf.parse_iods(data.decode("utf-8", "surrogateescape"), "fuzz")
    except iodsconf.IodsConfError:
        return
    text = "\n".join(iodsconf.format_iod(h, p) for h, p in iods)
    if iodsconf.parse_iods(text) != iods:
        raise AssertionError(f"{iods!r} does not parse back from {text!r}")
