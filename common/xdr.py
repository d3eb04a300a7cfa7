"""XDR (RFC 4506): a Packer/Unpacker pair and declarative types.

Protocol modules describe their data the way the RFCs do, so a reader can hold
the code against the RFC text::

    class specdata3(Struct):
        specdata1: UInt32
        specdata2: UInt32

    class GETATTR3res(Union, switch=Enum(nfsstat3)):
        arms = {nfsstat3.NFS3_OK: GETATTR3resok}
        default = Void

The annotations are XDR type objects, not Python types, so modules that define
structs must not use ``from __future__ import annotations``.

Decoding input from the network is untrusted: every length is checked against
the bytes actually present (and against the declared maximum) before anything
is allocated, and every failure raises XdrError, never anything else.
"""

import struct

_u32 = struct.Struct(">I")
_i32 = struct.Struct(">i")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class XdrError(ValueError):
    """Input that is not valid XDR for the expected type."""


def _pad(n):
    return (4 - n % 4) % 4


class Packer:
    __slots__ = ("buf",)

    def __init__(self):
        self.buf = bytearray()

    def pack_uint(self, v):
        self.buf += _u32.pack(v)

    def pack_int(self, v):
        self.buf += _i32.pack(v)

    def pack_uhyper(self, v):
        self.buf += _u64.pack(v)

    def pack_hyper(self, v):
        self.buf += _i64.pack(v)

    def pack_bool(self, v):
        self.buf += _u32.pack(1 if v else 0)

    def pack_fopaque(self, n, data):
        if len(data) != n:
            raise XdrError(f"fixed opaque needs {n} bytes, got {len(data)}")
        self.buf += data
        self.buf += _PAD[n % 4]

    def pack_opaque(self, data):
        n = len(data)
        self.buf += _u32.pack(n)
        self.buf += data
        self.buf += _PAD[n % 4]

    def pack_raw(self, data):
        """Append bytes that are already XDR (e.g. a pre-encoded body)."""
        self.buf += data

    def get_buffer(self):
        return bytes(self.buf)


class Unpacker:
    __slots__ = ("data", "pos")

    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    # The hot methods check bounds themselves rather than through _take: a
    # method call is a good part of decoding one integer.

    def _take(self, n):
        end = self.pos + n
        if end > len(self.data):
            self._truncated(n)
        start = self.pos
        self.pos = end
        return start

    def _truncated(self, n):
        have = len(self.data) - self.pos
        raise XdrError(f"truncated: need {n} bytes at offset {self.pos}, have {have}")

    def unpack_uint(self):
        pos = self.pos
        if pos + 4 > len(self.data):
            self._truncated(4)
        self.pos = pos + 4
        return _u32.unpack_from(self.data, pos)[0]

    def unpack_int(self):
        return _i32.unpack_from(self.data, self._take(4))[0]

    def unpack_uhyper(self):
        pos = self.pos
        if pos + 8 > len(self.data):
            self._truncated(8)
        self.pos = pos + 8
        return _u64.unpack_from(self.data, pos)[0]

    def unpack_hyper(self):
        return _i64.unpack_from(self.data, self._take(8))[0]

    def unpack_bool(self):
        v = self.unpack_uint()
        if v > 1:
            raise XdrError(f"bool out of range: {v}")
        return v == 1

    def unpack_fopaque(self, n):
        start = self._take(n + _pad(n))
        return bytes(self.data[start:start + n])

    def unpack_opaque(self, maxlen=None):
        data, pos = self.data, self.pos
        if pos + 4 > len(data):
            self._truncated(4)
        n = _u32.unpack_from(data, pos)[0]
        start = self.pos = pos + 4
        if maxlen is not None and n > maxlen:
            raise XdrError(f"opaque length {n} exceeds maximum {maxlen}")
        end = start + n
        after = end + (-n & 3)
        if after > len(data):
            self._truncated(after - start)
        self.pos = after
        return bytes(data[start:end])

    def remaining(self):
        return len(self.data) - self.pos

    def rest(self):
        """The undecoded tail, e.g. procedure arguments after an RPC header."""
        return self.data[self.pos:]

    def done(self):
        if self.pos != len(self.data):
            raise XdrError(f"{len(self.data) - self.pos} unexpected trailing bytes")


# --- Types ---------------------------------------------------------------
# Every type has pack(packer, value) and unpack(unpacker) -> value.


class _Prim:
    __slots__ = ("name", "pack", "unpack", "lo", "hi")

    def __init__(self, name, packfn, unpackfn, lo, hi):
        self.name, self.lo, self.hi = name, lo, hi
        self.unpack = unpackfn
        check = self._checked(packfn)
        self.pack = check

    def _checked(self, packfn):
        lo, hi, name = self.lo, self.hi, self.name

        def pack(p, v):
            if not lo <= v <= hi:
                raise XdrError(f"{name} out of range: {v}")
            packfn(p, v)
        return pack

    def __repr__(self):
        return self.name


Int32 = _Prim("int", Packer.pack_int, Unpacker.unpack_int, -(1 << 31), (1 << 31) - 1)
UInt32 = _Prim("unsigned int", Packer.pack_uint, Unpacker.unpack_uint, 0, (1 << 32) - 1)
Int64 = _Prim("hyper", Packer.pack_hyper, Unpacker.unpack_hyper, -(1 << 63), (1 << 63) - 1)
UInt64 = _Prim("unsigned hyper", Packer.pack_uhyper, Unpacker.unpack_uhyper, 0, (1 << 64) - 1)


class _Bool:
    def pack(self, p, v):
        p.pack_bool(v)

    def unpack(self, u):
        return u.unpack_bool()

    def __repr__(self):
        return "bool"


Bool = _Bool()


class _Void:
    def pack(self, p, v):
        pass

    def unpack(self, u):
        return None

    def __repr__(self):
        return "void"


Void = _Void()


class Enum:
    """An XDR enum backed by a Python IntEnum; unknown values are decode errors."""

    def __init__(self, enum_cls):
        self.enum_cls = enum_cls
        self._by_value = {m.value: m for m in enum_cls}

    def pack(self, p, v):
        p.pack_int(int(v))

    def unpack(self, u):
        v = u.unpack_int()
        try:
            return self._by_value[v]
        except KeyError:
            raise XdrError(f"{self.enum_cls.__name__}: unknown value {v}") from None

    def __repr__(self):
        return f"enum {self.enum_cls.__name__}"


class FixedOpaque:
    def __init__(self, n):
        self.n = n

    def pack(self, p, v):
        p.pack_fopaque(self.n, v)

    def unpack(self, u):
        return u.unpack_fopaque(self.n)

    def __repr__(self):
        return f"opaque[{self.n}]"


class Opaque:
    """Variable-length opaque<max>; also XDR string<max> (kept as bytes: NFS
    names and paths are byte strings in no particular encoding)."""

    def __init__(self, maxlen=None):
        self.maxlen = maxlen

    def pack(self, p, v):
        if self.maxlen is not None and len(v) > self.maxlen:
            raise XdrError(f"opaque length {len(v)} exceeds maximum {self.maxlen}")
        p.pack_opaque(v)

    def unpack(self, u):
        return u.unpack_opaque(self.maxlen)

    def __repr__(self):
        return f"opaque<{self.maxlen or ''}>"


String = Opaque


class Array:
    """Variable-length array elem<max>. Each element takes at least 4 bytes on
    the wire, so a count larger than the remaining input is rejected before any
    list is built."""

    def __init__(self, elem, maxlen=None):
        self.elem, self.maxlen = elem, maxlen

    def pack(self, p, v):
        if self.maxlen is not None and len(v) > self.maxlen:
            raise XdrError(f"array length {len(v)} exceeds maximum {self.maxlen}")
        p.pack_uint(len(v))
        for item in v:
            self.elem.pack(p, item)

    def unpack(self, u):
        n = u.unpack_uint()
        if self.maxlen is not None and n > self.maxlen:
            raise XdrError(f"array length {n} exceeds maximum {self.maxlen}")
        if n * 4 > u.remaining() and not isinstance(self.elem, _Void):
            raise XdrError(f"array length {n} exceeds the remaining input")
        unpack = self.elem.unpack
        return [unpack(u) for _ in range(n)]

    def __repr__(self):
        return f"{self.elem!r}<{self.maxlen or ''}>"


class Optional:
    """XDR optional-data (``type *name``) and bool-discriminated unions with a
    void FALSE arm (post_op_attr, post_op_fh3, ...): None or a value."""

    def __init__(self, elem):
        self.elem = elem

    def pack(self, p, v):
        if v is None:
            p.pack_uint(0)
        else:
            p.pack_uint(1)
            self.elem.pack(p, v)

    def unpack(self, u):
        return self.elem.unpack(u) if u.unpack_bool() else None

    def __repr__(self):
        return f"*{self.elem!r}"


class LinkedList:
    """The RFCs' ``entry *nextentry`` chains (READDIR, DUMP, EXPORT): encoded as
    value-follows flags, presented as a Python list. A chain is bounded only by
    the input, and every element consumes input, so decoding terminates."""

    def __init__(self, elem):
        self.elem = elem

    def pack(self, p, v):
        for item in v:
            p.pack_uint(1)
            self.elem.pack(p, item)
        p.pack_uint(0)

    def unpack(self, u):
        out = []
        while u.unpack_bool():
            out.append(self.elem.unpack(u))
        return out


class _StructMeta(type):
    """Turns annotated fields into __slots__, __init__, __eq__, __repr__ and the
    XDR pack/unpack class methods."""

    def __new__(mcls, name, bases, ns):
        annotations = ns.get("__annotations__", {})
        fields = tuple(annotations.items())
        ns["__slots__"] = tuple(f for f, _ in fields)
        ns["_fields"] = fields
        cls = super().__new__(mcls, name, bases, ns)
        if bases:  # (not Struct itself)
            _decode_compiled(cls)
        return cls

    def pack(cls, p, v):
        for fname, ftype in cls._fields:
            try:
                ftype.pack(p, getattr(v, fname))
            except XdrError:
                raise
            except (TypeError, AttributeError, struct.error) as e:
                raise XdrError(f"{cls.__name__}.{fname}: {e}") from None

    def unpack(cls, u):
        """The reference decoder; a class decodes through the function
        written for it instead (see _decode_compiled)."""
        obj = cls.__new__(cls)
        for fname, ftype in cls._fields:
            object.__setattr__(obj, fname, ftype.unpack(u))
        return obj


class Struct(metaclass=_StructMeta):
    """Base for XDR structs. Fields are positional or keyword in declaration order."""

    __slots__ = ()
    _fields = ()

    def __init__(self, *args, **kwargs):
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} fields")
        for (fname, _), value in zip(fields, args):
            setattr(self, fname, value)
        for fname, _ in fields[len(args):]:
            try:
                setattr(self, fname, kwargs.pop(fname))
            except KeyError:
                raise TypeError(f"{type(self).__name__}: missing field {fname!r}") from None
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kwargs)}")

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, f) == getattr(other, f) for f, _ in self._fields)

    def __repr__(self):
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f, _ in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes):
        values = {f: getattr(self, f) for f, _ in self._fields}
        values.update(changes)
        return type(self)(**values)


class _UnionMeta(type):
    def __new__(mcls, name, bases, ns, **kw):
        cls = super().__new__(mcls, name, bases, ns, **kw)
        if bases:  # (not Union itself)
            _decode_compiled(cls)
        return cls

    def pack(cls, p, v):
        cls.switch.pack(p, v.disc)
        arm = cls.arms.get(v.disc, cls.default)
        if arm is None:
            raise XdrError(f"{cls.__name__}: no arm for {v.disc!r}")
        arm.pack(p, v.body)

    def unpack(cls, u):
        """The reference decoder (see _StructMeta.unpack)."""
        disc = cls.switch.unpack(u)
        arm = cls.arms.get(disc, cls.default)
        if arm is None:
            raise XdrError(f"{cls.__name__}: no arm for {disc!r}")
        obj = cls.__new__(cls)
        obj.disc = disc
        obj.body = arm.unpack(u)
        return obj


class Union(metaclass=_UnionMeta):
    """Base for discriminated unions: ``switch`` (a type), ``arms`` (discriminant
    -> type), ``default`` (type for other values, or None if they are invalid).
    A value is ``Cls(disc, body)``; a void arm's body is None."""

    __slots__ = ("disc", "body")
    switch = Int32
    arms = {}
    default = None

    def __init_subclass__(cls, switch=None, **kw):
        super().__init_subclass__(**kw)
        if switch is not None:
            cls.switch = switch

    def __init__(self, disc, body=None):
        self.disc = disc
        self.body = body

    def __eq__(self, other):
        return type(self) is type(other) and self.disc == other.disc and self.body == other.body

    def __repr__(self):
        return f"{type(self).__name__}({self.disc!r}, {self.body!r})"


# --- Decoders written for each type ------------------------------------------
# A struct or union class decodes through a function written for it (on its
# first use, when the types it names are all defined): its fields, and those
# of the structs, unions, optionals and primitives inside them, decoded in
# line from local variables, where the reference decoders above make a call,
# an attribute lookup and an Unpacker round trip per value. A CREATE3args
# (a handle, a name, a createhow3 with six optional attributes): 5.7 against
# 2.3 us. What the reference decoders accept, return and refuse, and the
# messages they refuse with, are the same (tests/test_xdr.py compares them).
# A type with a decoder of its own (fattr3's, an OpenEnum's, arrays) is
# called as it is.

_INLINE_DEPTH = 6     # structs and unions nested deeper are called
_INLINE_LINES = 300   # nor inlined into a function already this long
_UNION_INLINE_ARMS = 6  # a union with more arm types finds its arm in a dict
_SIZES = {Int32: (4, _i32), UInt32: (4, _u32), Int64: (8, _i64), UInt64: (8, _u64)}


def _truncated_at(u, pos, n):
    u.pos = pos
    u._truncated(n)


class _Writer:
    def __init__(self):
        self.lines = []
        self.ns = {"XdrError": XdrError, "_truncated_at": _truncated_at, "_new": object.__new__,
                   "_setattr": object.__setattr__, "_u32": _u32.unpack_from}
        self.count = 0

    def var(self):
        self.count += 1
        return f"v{self.count}"

    def const(self, obj):
        name = f"k{len(self.ns)}"
        self.ns[name] = obj
        return name

    def line(self, indent, text):
        self.lines.append("    " * indent + text)


def _own_decoder(t):
    """Whether a struct or union class (or a base of it) decodes itself."""
    for klass in t.__mro__:
        d = klass.__dict__.get("unpack")
        if d is not None and not getattr(getattr(d, "__func__", None), "_xdr_written", False):
            return True
    return False


def _write(w, t, target, ind, depth):
    """Lines that decode a ``t`` into the local ``target`` (data, pos, end, u)."""
    size = _SIZES.get(t) if isinstance(t, _Prim) else None
    if size is not None:
        n, fmt = size
        w.line(ind, f"if pos + {n} > end: _truncated_at(u, pos, {n})")
        w.line(ind, f"{target} = {w.const(fmt.unpack_from)}(data, pos)[0]")
        w.line(ind, f"pos += {n}")
    elif t is Bool:
        _write_bool(w, target, ind)
    elif t is Void:
        w.line(ind, f"{target} = None")
    elif type(t) is Enum:
        v = w.var()
        _write(w, Int32, v, ind, depth)
        w.line(ind, f"try: {target} = {w.const(t._by_value)}[{v}]")
        w.line(ind, "except KeyError:")
        w.line(ind + 1, f"raise XdrError(f'{t.enum_cls.__name__}: unknown value {{{v}}}') from None")
    elif type(t) is Opaque:
        n, e, a = w.var(), w.var(), w.var()
        w.line(ind, "if pos + 4 > end: _truncated_at(u, pos, 4)")
        w.line(ind, f"{n} = _u32(data, pos)[0]")
        w.line(ind, "pos += 4")
        if t.maxlen is not None:
            w.line(ind, f"if {n} > {int(t.maxlen)}:")
            w.line(ind + 1, "u.pos = pos")
            w.line(ind + 1, f"raise XdrError(f'opaque length {{{n}}} exceeds maximum {int(t.maxlen)}')")
        w.line(ind, f"{e} = pos + {n}")
        w.line(ind, f"{a} = {e} + (-{n} & 3)")
        w.line(ind, f"if {a} > end: _truncated_at(u, pos, {a} - pos)")
        w.line(ind, f"{target} = bytes(data[pos:{e}])")
        w.line(ind, f"pos = {a}")
    elif type(t) is FixedOpaque:
        n = int(t.n)
        whole = n + _pad(n)
        w.line(ind, f"if pos + {whole} > end: _truncated_at(u, pos, {whole})")
        w.line(ind, f"{target} = bytes(data[pos:pos + {n}])")
        w.line(ind, f"pos += {whole}")
    elif type(t) is Optional:
        present = w.var()
        _write_bool(w, present, ind)
        w.line(ind, f"if {present}:")
        _write(w, t.elem, target, ind + 1, depth)
        w.line(ind, "else:")
        w.line(ind + 1, f"{target} = None")
    elif (isinstance(t, (_StructMeta, _UnionMeta)) and not _own_decoder(t)
          and (depth == 0 or (depth <= _INLINE_DEPTH and len(w.lines) < _INLINE_LINES))):
        if isinstance(t, _StructMeta):
            _write_struct(w, t, target, ind, depth)
        else:
            _write_union(w, t, target, ind, depth)
    else:
        w.line(ind, "u.pos = pos")
        w.line(ind, f"{target} = {w.const(t)}.unpack(u)")
        w.line(ind, "pos = u.pos")


def _write_bool(w, target, ind):
    _write(w, UInt32, target, ind, 0)
    w.line(ind, f"if {target} > 1: raise XdrError(f'bool out of range: {{{target}}}')")
    w.line(ind, f"{target} = {target} == 1")


def _write_struct(w, t, target, ind, depth):
    setter = None if t.__setattr__ is object.__setattr__ else "_setattr"
    values = []
    for fname, ftype in t._fields:
        v = w.var()
        _write(w, ftype, v, ind, depth + 1)
        values.append((fname, v))
    w.line(ind, f"{target} = _new({w.const(t)})")
    for fname, v in values:
        if setter is None:
            w.line(ind, f"{target}.{fname} = {v}")
        else:
            w.line(ind, f"{setter}({target}, {fname!r}, {v})")


def _write_union(w, t, target, ind, depth):
    disc, body = w.var(), w.var()
    _write(w, t.switch, disc, ind, depth + 1)
    groups = {}  # arm type (by identity) -> discriminants
    for value, arm in t.arms.items():
        groups.setdefault(id(arm), (arm, []))[1].append(value)
    no_arm = f"raise XdrError(f'{t.__name__}: no arm for {{{disc}!r}}')"
    if len(groups) > _UNION_INLINE_ARMS:
        arm = w.var()
        w.line(ind, f"{arm} = {w.const(t.arms)}.get({disc}, {w.const(t.default)})")
        w.line(ind, f"if {arm} is None: {no_arm}")
        w.line(ind, "u.pos = pos")
        w.line(ind, f"{body} = {arm}.unpack(u)")
        w.line(ind, "pos = u.pos")
    else:
        keyword = "if"
        for arm, values in groups.values():
            test = " or ".join(f"{disc} == {w.const(v)}" for v in values)
            w.line(ind, f"{keyword} {test}:")
            _write(w, arm, body, ind + 1, depth + 1)
            keyword = "elif"
        if groups:
            w.line(ind, "else:")
            ind += 1
        if t.default is None:
            w.line(ind, no_arm)
        else:
            _write(w, t.default, body, ind, depth + 1)
        if groups:
            ind -= 1
    w.line(ind, f"{target} = _new({w.const(t)})")
    w.line(ind, f"{target}.disc = {disc}")
    w.line(ind, f"{target}.body = {body}")


def _written_decoder(t):
    w = _Writer()
    w.line(1, "data = u.data")
    w.line(1, "pos = u.pos")
    w.line(1, "end = len(data)")
    _write(w, t, "value", 1, 0)
    w.line(1, "u.pos = pos")
    w.line(1, "return value")
    source = "def unpack(u):\n" + "\n".join(w.lines) + "\n"
    # (Written from the protocol modules' declarations only: no input of any
    # kind reaches the source, only the values the function then decodes.)
    exec(compile(source, f"<xdr decoder of {t.__name__}>", "exec"), w.ns)  # noqa: S102
    fn = w.ns["unpack"]
    fn._xdr_written = True
    fn._xdr_source = source
    return fn


def _decode_compiled(cls):
    """Give a struct or union class (one that does not decode itself) a
    decoder written for it on its first use."""
    if _own_decoder(cls):
        return

    def first_use(u):
        fn = _written_decoder(cls)
        cls.unpack = staticmethod(fn)
        return fn(u)
    first_use._xdr_written = True
    cls.unpack = staticmethod(first_use)


def encode(xdr_type, value):
    p = Packer()
    xdr_type.pack(p, value)
    return p.get_buffer()


def decode(xdr_type, data, *, exact=True):
    """Decode one value; with exact, trailing bytes are an error."""
    u = Unpacker(data)
    try:
        v = xdr_type.unpack(u)
    except (struct.error, IndexError) as e:  # defensive: Unpacker checks first
        raise XdrError(str(e)) from None
    if exact:
        u.done()
    return v


__all__ = [
    "XdrError", "Packer", "Unpacker", "Int32", "UInt32", "Int64", "UInt64", "Bool",
    "Void", "Enum", "FixedOpaque", "Opaque", "String", "Array", "Optional", "LinkedList",
    "Struct", "Union", "encode", "decode",
]
