"""Property tests (hypothesis) for the decoders the codec tests do not already
cover with properties (tests/test_*_codec.py, test_rpc.py, test_xdr.py,
test_iodproto.py, test_metafile.py have theirs).

- Every fuzz target (tools/dev/fuzz/targets.py) on mutated seeds and random bytes:
  nothing escapes but the codec's own error and every target's own checks
  hold, so a decoder change is exercised beyond the committed corpus even
  before anyone fuzzes again.
- The text parsers (exports, iods.conf, key file): what a generator writes
  parses to what it meant; anything else is refused with the parser's error.
- The stream reassemblers (RPC record marking, iod frames): however the peer
  fragments and the network chunks, the same messages come out, and what is
  held stays bounded.
- Universal addresses: every address and port goes through text and sockaddr
  and back.
"""

import dataclasses
import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from common import exports, iodproto, iodsconf, keyfile, portmap, rpc
from tools.dev.fuzz import catalog, known

QUICK = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))


# --- every fuzz target ---------------------------------------------------------------


@st.composite
def _mutated(draw, seeds):
    b = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        op = draw(st.integers(0, 2))
        if op == 0:
            b[i] = draw(st.integers(0, 255))
        elif op == 1:
            del b[i:i + draw(st.integers(1, 8))]
        else:
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(b)


def _check(name, run, data):
    bugs = known.for_target(name)
    if any(k.avoid and k.avoid(data) for k in bugs):
        return
    try:
        run(data)
    except Exception as e:
        if not any(k.raises and k.raises(e) for k in bugs):
            raise


@pytest.mark.parametrize("name", [n for n in catalog.names() if n != "dispatch"])
def test_codec_target_on_mutated_seeds_and_random_bytes(name):
    target = catalog.get(name)
    seeds = list(target.seeds())

    @QUICK
    @given(st.one_of(_mutated(seeds), st.binary(max_size=512)))
    def check(data):
        _check(name, target.run, data)

    check()


@pytest.mark.skipif(os.geteuid() != 0, reason="the dispatch target's MetaFS needs root")
def test_dispatch_target_on_mutated_seeds(tmp_path):
    from tools.dev.fuzz import dispatch
    world = dispatch.World(str(tmp_path / "world"))
    seeds = list(dispatch.seeds())

    @settings(QUICK, max_examples=300)
    @given(_mutated(seeds))
    def check(data):
        _check("dispatch", world.handle, data)

    try:
        check()
    finally:
        world.close()


# --- exports(5) ---------------------------------------------------------------------

_name_chars = st.sampled_from("abcXYZ019_-. ")
_components = st.lists(st.text(_name_chars, min_size=1, max_size=6).filter(
    lambda c: c.strip() and c not in (".", "..")), min_size=1, max_size=4)


def _escape(component):
    return "".join(f"\\{ord(c):03o}" if c in ' "#\\' else c for c in component)


_hosts = st.one_of(
    st.just("*"),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: str(a)),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
        lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))),
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z]{1,5}[*?][a-z]{0,3}\.example", fullmatch=True),
)
_flags = st.lists(st.sampled_from(sorted(exports._FLAGS)), max_size=4)


@given(_components, st.lists(st.tuples(_hosts, _flags, st.integers(0, (1 << 32) - 1)),
                             min_size=1, max_size=4, unique_by=lambda t: t[0]))
@QUICK
def test_exports_lines_mean_what_they_say(parts, clients):
    line = "/" + "/".join(_escape(p) for p in parts)
    for host, flags, anonuid in clients:
        line += f" {host}({','.join(flags + [f'anonuid={anonuid}'])})"
    (export,) = exports.parse_exports(line + "\n")
    assert export.path == "/" + "/".join(parts)
    assert [c.text for c in export.clients] == [h for h, _, _ in clients]
    for spec, (_, flags, anonuid) in zip(export.clients, clients):
        expect = {"anonuid": anonuid}
        for f in flags:
            field, value = exports._FLAGS[f]
            expect[field] = value
        assert spec.options == dataclasses.replace(exports.ExportOptions(), **expect)


@given(st.integers(1, 255).filter(lambda b: b != ord("/")))
@QUICK
def test_an_octal_escape_is_the_byte_it_names(b):
    (export,) = exports.parse_exports(f"/x\\{b:03o}y h\n")
    assert os.fsencode(export.path) == b"/x" + bytes([b]) + b"y"


@given(st.binary(max_size=200))
@QUICK
def test_exports_text_is_parsed_or_refused_with_exports_error(blob):
    try:
        parsed = exports.parse_exports(blob.decode("utf-8", "surrogateescape"), "f")
    except exports.ExportsError as e:
        assert str(e).startswith("f:")
        return
    for export in parsed:
        assert os.fsdecode(os.fsencode(export.path)) == export.path


# --- iods.conf --------------------------------------------------------------------------

_iod_hosts = st.one_of(st.ip_addresses(v=4).map(str),
                       st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,6}){0,2}",
                                     fullmatch=True))


@given(st.lists(st.tuples(_iod_hosts, st.one_of(st.none(), st.integers(1, 65535))),
                max_size=6, unique_by=lambda t: (t[0], t[1] or iodproto.DEFAULT_PORT)),
       st.lists(st.sampled_from(["", "   ", "# note", "\t# x:1"]), max_size=6))
@QUICK
def test_iods_conf_lists_what_was_written_in_order(entries, noise):
    lines = [f"  {h}{'' if p is None else f':{p}'}  # {i}" for i, (h, p) in enumerate(entries)]
    for i, extra in enumerate(noise):
        lines.insert(i % (len(lines) + 1), extra)
    got = iodsconf.parse_iods("\n".join(lines) + "\n")
    assert got == [(h, iodproto.DEFAULT_PORT if p is None else p) for h, p in entries]


@given(st.text(max_size=120))
@QUICK
def test_iods_conf_text_is_parsed_or_refused_with_its_error(text):
    try:
        iods = iodsconf.parse_iods(text, "f")
    except iodsconf.IodsConfError as e:
        assert str(e).startswith("f")
        return
    assert iodsconf.parse_iods("\n".join(iodsconf.format_iod(h, p) for h, p in iods)) == iods


# --- the key file -------------------------------------------------------------------------

@given(st.lists(st.tuples(st.integers(0, 255), st.binary(min_size=32, max_size=64)),
                min_size=1, max_size=4, unique_by=lambda t: t[0]))
@QUICK
def test_key_file_gives_back_its_keys_first_one_signing(entries):
    text = "# keys\n" + "".join(f"{kid}: {key.hex()}\n\n" for kid, key in entries)
    keys = keyfile.parse(text)
    assert (keys.current_id, keys.current) == entries[0]
    assert dict(keys.by_id) == dict(entries)


@given(st.text(max_size=120))
@QUICK
def test_key_file_text_is_parsed_or_refused_with_its_error(text):
    try:
        keys = keyfile.parse(text, "f")
    except keyfile.KeyFileError:
        return
    assert all(0 <= k <= 255 and len(v) >= keyfile.MIN_KEY_BYTES for k, v in keys.by_id.items())


# --- stream reassembly ------------------------------------------------------------------


def _chunks(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@given(st.lists(st.binary(max_size=300), max_size=5), st.data())
@QUICK
def test_records_come_out_whole_however_fragmented_and_chunked(records, data):
    max_record = 300
    stream = b""
    for record in records:
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(record)), max_size=4))))
        frags = _chunks(record, cuts)
        for i, frag in enumerate(frags):
            last = rpc.LAST_FRAGMENT if i == len(frags) - 1 else 0
            stream += (last | len(frag)).to_bytes(4, "big") + frag
    reader = rpc.RecordReader(max_record)
    out = []
    for chunk in _chunks(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=8))):
        out += reader.feed(chunk)
        assert reader.pending() <= max_record + 4 + 4
    assert out == records and reader.pending() == 0


_messages = st.sampled_from([
    iodproto.Message(iodproto.Op.PING, 1),
    iodproto.Message(iodproto.Op.COMMIT, 2, ino=5, seed=9),
    iodproto.Message(iodproto.Op.PURGE, 3, files=[(1, 2), (3, 4)]),
    iodproto.Message(iodproto.Op.REPLY, 4, status=0, data=b"x" * 200),
])


@given(st.lists(_messages, max_size=5), st.lists(st.integers(0, 2000), max_size=8))
@QUICK
def test_iod_frames_come_out_whole_however_chunked(messages, cuts):
    keys = iodproto.Keys.single(b"k" * 32)
    frames = [iodproto.encode(m, keys) for m in messages]
    stream = b"".join(frames)
    reader = iodproto.FrameReader()
    out = []
    for chunk in _chunks(stream, cuts):
        out += reader.feed(chunk)
    assert out == frames
    assert [iodproto.decode(f, keys) for f in out] == messages


_u64 = st.integers(0, 2**64 - 1)
_addr = st.one_of(st.none(), st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)))
_file_list = st.lists(st.tuples(_u64, _u64), max_size=100)
_FIELDS = {
    iodproto.Op.PING: dict(spoof_from=_addr),
    iodproto.Op.READ: dict(ino=_u64, seed=_u64, offset=_u64, count=_u64, client=_addr,
                           source=_addr, head=st.binary(max_size=200)),
    iodproto.Op.WRITE: dict(ino=_u64, seed=_u64, offset=_u64, data=st.binary(max_size=2000),
                            stable=st.booleans(), client=_addr, source=_addr,
                            reply=st.one_of(st.none(), st.binary(max_size=200))),
    iodproto.Op.COMMIT: dict(ino=_u64, seed=_u64),
    iodproto.Op.TRUNCATE: dict(ino=_u64, seed=_u64, size=_u64),
    iodproto.Op.PURGE: dict(files=_file_list),
    iodproto.Op.LIST: dict(cursor=st.one_of(st.none(), st.binary(max_size=256))),
    iodproto.Op.REPLY: dict(status=st.integers(-2**63, 2**64 - 1),
                            data=st.one_of(st.none(), st.binary(max_size=2000)),
                            files=st.one_of(st.none(), _file_list),
                            cursor=st.one_of(st.none(), st.binary(max_size=256)),
                            message=st.text(max_size=100)),
}
_stamps = st.one_of(st.none(), st.tuples(_u64, _u64, st.floats(0, 2e9)))


@st.composite
def _iod_message(draw):
    op = draw(st.sampled_from(sorted(_FIELDS)))
    fields = {k: draw(v) for k, v in _FIELDS[op].items()}
    return iodproto.Message(op, draw(_u64), draw(_stamps), **fields)


@given(_iod_message())
@QUICK
def test_every_iod_message_the_senders_can_build_is_decoded_as_it_was(msg):
    keys = iodproto.Keys.single(b"k" * 32)
    assert iodproto.decode(iodproto.encode(msg, keys), keys) == msg


# --- universal addresses ------------------------------------------------------------------

@given(st.ip_addresses(), st.integers(0, 65535))
@QUICK
def test_universal_and_transport_addresses_round_trip(addr, port):
    text = portmap.uaddr_from(str(addr), port)
    assert portmap.parse_uaddr(text) == (addr.compressed, port)
    assert portmap.parse_uaddr(text.encode()) == (addr.compressed, port)
    assert portmap.uaddr_from_taddr(portmap.taddr_from_uaddr(text)) == text


@given(st.binary(max_size=40))
@QUICK
def test_transport_addresses_are_parsed_or_refused_with_uaddr_error(blob):
    try:
        text = portmap.uaddr_from_taddr(blob)
    except portmap.UaddrError:
        return
    # Padding, flow label and scope id are not part of the address: canonical from here on.
    assert portmap.uaddr_from_taddr(portmap.taddr_from_uaddr(text)) == text
