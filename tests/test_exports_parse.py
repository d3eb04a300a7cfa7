"""exports(5) as admins write it: syntax, errors with file:line, which client
spec applies, and how identities are squashed."""

import ipaddress

import pytest

from common.exports import (
    ANON_ID,
    ANONYMOUS,
    HOST,
    NETWORK,
    WILDCARD,
    ExportOptions,
    ExportsError,
    parse_exports,
)


def one(text):
    exports = parse_exports(text, "/etc/exports")
    assert len(exports) == 1
    return exports[0]


def opts_of(text, client):
    return next(c.options for c in one(text).clients if c.text == client)


# --- Syntax --------------------------------------------------------------


def test_the_classic_line():
    e = one("/srv/data  host1(rw) 10.0.0.0/8(ro,all_squash) *.example.org(rw) *(ro)\n")
    assert e.path == "/srv/data" and e.lineno == 1 and e.filename == "/etc/exports"
    assert [(c.text, c.kind) for c in e.clients] == [
        ("host1", HOST), ("10.0.0.0/8", NETWORK), ("*.example.org", WILDCARD), ("*", ANONYMOUS)]
    assert [c.options.readonly for c in e.clients] == [False, True, False, True]
    assert e.clients[1].options.all_squash and not e.clients[0].options.all_squash


def test_defaults_are_exportfs_defaults():
    o = opts_of("/a host\n", "host")
    assert o == ExportOptions()
    assert (o.readonly, o.root_squash, o.all_squash, o.secure, o.sync) == \
        (True, True, False, True, True)
    assert (o.anonuid, o.anongid) == (ANON_ID, ANON_ID) == (65534, 65534)


def test_comments_blank_lines_and_continuations():
    text = ("# whole-line comment\n"
            "\n"
            "/a   h1(rw)   # trailing comment\n"
            "/b   h2(rw) \\\n"
            "     h3(ro) \\\n"
            "     h4\n"
            "/c h5\n")
    a, b, c = parse_exports(text, "f")
    assert [x.text for x in a.clients] == ["h1"]
    assert [x.text for x in b.clients] == ["h2", "h3", "h4"] and b.lineno == 4
    assert c.lineno == 7


def test_quoted_paths_and_octal_escapes():
    assert one('"/srv/my data" h\n').path == "/srv/my data"
    assert one("/srv/my\\040data h\n").path == "/srv/my data"
    assert one('"/srv/#not a comment" h # but this is\n').path == "/srv/#not a comment"


def test_an_escape_is_a_byte_so_it_names_the_same_path_as_the_byte_itself():
    # \303\251 is "é" in UTF-8: the same directory as a literal é.
    assert one("/srv/caf\\303\\251 h\n").path == one("/srv/caf\u00e9 h\n").path == "/srv/caf\u00e9"
    # A byte that is not UTF-8 stays that byte when nfspd opens the path.
    import os
    assert os.fsencode(one("/srv/\\377 h\n").path) == b"/srv/\xff"


@pytest.mark.parametrize("path, words", [("/a\\400", "up to 377"), ("/a\\000b", "NUL")])
def test_escapes_that_are_not_a_byte_of_a_path_are_errors(path, words):
    with pytest.raises(ExportsError, match=words):
        parse_exports(f"{path} h\n", "f")


def test_only_ascii_white_space_separates_and_only_newline_ends_a_line():
    # exportfs splits on C isspace() and '\n'; a no-break space or U+0085 is part of a path.
    e = one("/srv/a\u00a0b\x85c h\n")
    assert e.path == "/srv/a\u00a0b\x85c" and [c.text for c in e.clients] == ["h"]
    assert [x.path for x in parse_exports("/a h\r\n/b h\r\n")] == ["/a", "/b"]


@pytest.mark.parametrize("value", ["1_000", "\u0661", "+5"])
def test_ids_are_ascii_decimal_numbers(value):
    with pytest.raises(ExportsError, match="not a number"):
        parse_exports(f"/a h(anonuid={value})\n", "f")


def test_paths_are_normalized():
    assert one("/srv//data/./ h\n").path == "/srv/data"
    assert one("/ h\n").path == "/"


def test_dash_options_set_defaults_for_the_clients_after_them():
    e = one("/a -rw,async h1 h2(ro) -no_root_squash h3\n")
    o1, o2, o3 = (c.options for c in e.clients)
    assert not o1.readonly and not o1.sync and o1.root_squash
    assert o2.readonly and not o2.sync
    assert not o3.readonly and not o3.root_squash


def test_later_options_override_earlier_ones():
    assert not opts_of("/a h(ro,rw)\n", "h").readonly
    assert opts_of("/a h(rw,ro)\n", "h").readonly


def test_every_known_option():
    o = opts_of("/a h(rw,no_root_squash,all_squash,anonuid=1000,anongid=100,insecure,async,"
                "no_wdelay,subtree_check,nohide,crossmnt,fsid=7)\n", "h")
    assert o == ExportOptions(readonly=False, root_squash=False, all_squash=True, anonuid=1000,
                              anongid=100, secure=False, sync=False, wdelay=False,
                              subtree_check=True, hide=False, crossmnt=True, fsid="7")
    back = opts_of("/a h(root_squash,no_all_squash,secure,sync,wdelay,no_subtree_check,hide,"
                   "nocrossmnt,fsid=root)\n", "h")
    assert back == ExportOptions(fsid="root")


def test_options_that_do_not_apply_here_are_accepted():
    o = opts_of("/a h(no_acl,insecure_locks,sec=sys,mountpoint=/a,nordirplus,"
                "fsid=6ba7b810-9dad-11d1-80b4-00c04fd430c8)\n", "h")
    assert o.fsid == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


def test_negative_anonuid_wraps_like_old_files_expect():
    assert opts_of("/a h(anonuid=-2)\n", "h").anonuid == 2**32 - 2


def test_client_forms():
    e = one("/a 192.168.1.7 fd00::1 10.1.0.0/255.255.0.0 2001:db8::/32 node?.c host.example.org. "
            "[ab]x.org *\n")
    kinds = {c.text: (c.kind, c.value) for c in e.clients}
    assert kinds["192.168.1.7"] == (HOST, ipaddress.ip_address("192.168.1.7"))
    assert kinds["fd00::1"] == (HOST, ipaddress.ip_address("fd00::1"))
    assert kinds["10.1.0.0/255.255.0.0"] == (NETWORK, ipaddress.ip_network("10.1.0.0/16"))
    assert kinds["2001:db8::/32"][0] == NETWORK
    assert kinds["node?.c"][0] == WILDCARD and kinds["[ab]x.org"][0] == WILDCARD
    assert kinds["host.example.org."] == (HOST, "host.example.org")
    assert kinds["*"][0] == ANONYMOUS


def test_same_path_on_two_lines_is_one_export_in_file_order():
    a, = parse_exports("/a h1(rw)\n/b h\n/a/ h2\n", "f")[:1]
    assert [c.text for c in a.clients] == ["h1", "h2"]


def test_no_clients_means_everyone_with_a_warning():
    e = one("/a\n")
    assert [c.text for c in e.clients] == ["*"]
    assert e.warnings and e.warnings[0].startswith("/etc/exports:1: ")


def test_space_before_parenthesis_is_the_exportfs_pitfall_world_gets_the_options():
    e = one("/a host1 (rw)\n")
    host1, world = e.clients
    assert host1.options.readonly and world.text == "*" and not world.options.readonly
    assert "applies to everyone" in e.warnings[0] and e.warnings[0].startswith("/etc/exports:1: ")


def test_a_wildcard_that_looks_like_an_address_gets_a_warning():
    e = one("/a 10.0.0.*(rw)\n")
    assert e.clients[0].kind == WILDCARD and "not addresses" in e.warnings[0]


# --- Errors: always file:line: message ---------------------------------


@pytest.mark.parametrize("line, words", [
    ("/a h(rw,bogus)", "unknown export option 'bogus'"),
    ("/a h(rw", "unbalanced parentheses"),
    ("/a h(rw))", "unbalanced parentheses"),
    ("/a h(rw, sync)", "unbalanced parentheses"),
    ("/a h)", "unbalanced parentheses"),
    ("/a @trusted(rw)", "netgroups are not supported"),
    ("/a gss/krb5(rw)", "not supported"),
    ("/a h(sec=krb5p)", "only 'sys'"),
    ("/a h(anonuid=nobody)", "not a number"),
    ("/a h(anonuid=99999999999)", "out of range"),
    ("/a h(anonuid)", "needs a value"),
    ("/a h(rw=x)", "takes no value"),
    ("/a h(fsid=??)", "fsid"),
    ("/a 10.0.0.0/33", "not an IP network"),
    ("/a 10.0.0.0/255.0.255.0", "not an IP network"),
    ("/a bad_host!", "not a valid host name"),
    ("relative/path h", "must be absolute"),
    ("/a/../etc h", "must be absolute"),
    ('"/a h', "unterminated double quote"),
    ("/a\\x h", "bad escape"),
    ("/a h h", "listed twice"),
])
def test_errors_name_the_file_and_line(line, words):
    text = "# header\n/ok h\n" + line + "\n"
    with pytest.raises(ExportsError) as exc:
        parse_exports(text, "/etc/exports")
    msg = str(exc.value)
    assert msg.startswith("/etc/exports:3: "), msg
    assert words in msg


def test_an_error_in_a_continued_line_names_its_first_line():
    with pytest.raises(ExportsError, match=r"^f:2: .*unknown export option"):
        parse_exports("/ok h\n/a h1 \\\n  h2(nope)\n", "f")


# --- Matching ----------------------------------------------------------


LINE = "/srv h1(rw) 10.0.0.0/8(ro,all_squash) *.example.org(rw,no_root_squash) *(ro,insecure)\n"


def test_the_most_specific_kind_wins_whatever_the_order_on_the_line():
    e = one("/srv *(ro) *.example.org(rw) 10.0.0.0/8(rw,all_squash) 10.1.2.3(rw,no_root_squash)\n")
    assert not e.match("10.1.2.3").root_squash  # single host beats the network before it
    assert e.match("10.9.9.9", "a.example.org").all_squash  # network beats wildcard
    assert not e.match("192.0.2.1", "a.example.org").readonly  # wildcard beats *
    assert e.match("192.0.2.1", "elsewhere.net").readonly


def test_within_one_kind_the_first_on_the_line_wins():
    e = one("/srv 10.0.0.0/8(rw) 10.1.0.0/16(ro)\n")
    assert not e.match("10.1.1.1").readonly
    e = one("/srv 10.1.0.0/16(ro) 10.0.0.0/8(rw)\n")
    assert e.match("10.1.1.1").readonly


def test_host_names_match_exactly_and_without_case():
    e = one(LINE)
    assert not e.match("192.0.2.5", "H1").readonly
    assert e.match("192.0.2.5", "h10").readonly  # falls through to *
    assert not e.match("192.0.2.5", ("x.local", "h1")).readonly  # an alias counts


def test_wildcards_match_dots_too_as_exports5_says():
    e = one("/srv *.example.org(rw)\n")
    assert e.match("192.0.2.5", "a.b.example.org") is not None
    assert e.match("192.0.2.5", "example.org") is None
    assert e.match("192.0.2.5", None) is None
    q = one("/srv node?.c(rw)\n")
    assert q.match("192.0.2.5", "node1.c") and not q.match("192.0.2.5", "node12.c")


def test_unlisted_clients_get_none():
    e = one("/srv 10.0.0.0/8(rw) h1\n")
    assert e.match("192.168.0.1", "other") is None
    assert e.match("2001:db8::1") is None


def test_ipv4_mapped_and_scoped_client_addresses():
    e = one("/srv 10.0.0.0/8(rw) fe80::1(ro)\n")
    assert e.match("::ffff:10.2.3.4") is not None
    assert e.match("fe80::1%lo") is not None


def test_needs_hostname_only_for_name_and_pattern_specs():
    assert not one("/srv 10.0.0.0/8 10.1.1.1 *\n").needs_hostname
    assert one("/srv h1\n").needs_hostname and one("/srv *.org\n").needs_hostname


# --- Squashing ----------------------------------------------------------


def test_root_squash_maps_uid_0_and_gid_0_independently_and_in_groups():
    o = ExportOptions()
    assert o.squash(0, 0, (0, 5)) == (65534, 65534, (65534, 5))
    assert o.squash(1000, 0, (10,)) == (1000, 65534, (10,))
    assert o.squash(0, 100, ()) == (65534, 100, ())
    assert o.squash(1000, 100, (10, 20)) == (1000, 100, (10, 20))


def test_no_root_squash_keeps_root():
    assert ExportOptions(root_squash=False).squash(0, 0, (0,)) == (0, 0, (0,))


def test_all_squash_maps_everyone_and_drops_groups():
    o = ExportOptions(all_squash=True, anonuid=99, anongid=98)
    assert o.squash(1000, 100, (10, 20)) == (99, 98, ())
    assert o.squash(0, 0, ()) == (99, 98, ())


def test_anonuid_applies_to_squashed_root_and_anonymous_callers():
    o = opts_of("/a h(anonuid=1500,anongid=1501)\n", "h")
    assert o.squash(0, 0, ()) == (1500, 1501, ())
    assert o.anonymous() == (1500, 1501, ())


def test_the_invalid_id_minus_one_becomes_anonymous_even_without_squash():
    o = ExportOptions(root_squash=False)
    assert o.squash(2**32 - 1, 2**32 - 1, ()) == (65534, 65534, ())


def test_ids_with_leading_zeros_are_their_value():
    o = opts_of("/a h(anonuid=000000000000005,anongid=-0000000000002)\n", "h")
    assert (o.anonuid, o.anongid) == (5, 4294967294)


def test_ids_of_thousands_of_digits_are_out_of_range_or_their_value():
    # int() refuses over 4300 digits, leading zeros included: never a ValueError.
    o = opts_of("/a h(anonuid=" + "0" * 5000 + "5)\n", "h")
    assert o.anonuid == 5
    with pytest.raises(ExportsError, match="out of range"):
        parse_exports("/a h(anonuid=-" + "9" * 5000 + ")\n", "f")


def test_no_pnfs_takes_layouts_away_from_a_client():
    """On by default (nfspd hands out layouts whenever it has iods); the
    knfsd spelling pnfs is accepted and means the default."""
    (e,) = parse_exports("/srv a(rw) b(rw,no_pnfs) c(rw,pnfs)\n", "f")
    assert [spec.options.pnfs for spec in e.clients] == [True, False, True]
