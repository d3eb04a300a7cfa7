import pytest

from common.iodsconf import (
    WILDCARD,
    IodEntry,
    IodsConfError,
    format_iod,
    load_entries,
    load_iods,
    parse_entries,
    parse_iods,
)


def test_hosts_ports_comments_blank_lines():
    text = """# the cluster's iods
node1
node2:2051     # rack 2

10.0.0.3:2050
Node4.Cluster.
"""
    assert parse_iods(text, "x") == [("node1", 2050), ("node2", 2051), ("10.0.0.3", 2050),
                                     ("node4.cluster", 2050)]


@pytest.mark.parametrize("line, fragment", [
    ("node1 node2", "one host[:port] per line"),
    ("node1:0", "not in 1..65535"),
    ("node1:65536", "not in 1..65535"),
    ("node1:http", "not in 1..65535"),
    ("node1:\u00b2", "not in 1..65535"),            # superscript two: isdigit() but not int()
    ("node1:\u0662\u0660\u0665\u0660", "not in 1..65535"),  # Arabic-Indic 2050
    (":2050", "missing host"),
    ("10.0.0.300", "not an IPv4 address"),
    ("::1", "IPv6"),
    ("[::1]:2050", "IPv6"),
    ("bad_name", "not a host name"),
    ("-lead.example", "not a host name"),
])
def test_errors_name_file_and_line(line, fragment):
    with pytest.raises(IodsConfError) as e:
        parse_iods(f"# header\nnode0\n{line}\n", "/etc/nfsp/iods.conf")
    assert str(e.value).startswith("/etc/nfsp/iods.conf:3: ")
    assert fragment in str(e.value)


def test_duplicate_refused_with_both_lines():
    with pytest.raises(IodsConfError, match=r"f:3: node1:2050 is already listed on line 1"):
        parse_iods("node1\nnode2\nnode1:2050\n", "f")


def test_load(tmp_path):
    p = tmp_path / "iods.conf"
    p.write_text("a\nb:7\n")
    assert load_iods(str(p)) == [("a", 2050), ("b", 7)]
    p.write_text("# nothing\n\n")
    with pytest.raises(IodsConfError, match="no iod listed"):
        load_iods(str(p))
    with pytest.raises(IodsConfError, match="No such file"):
        load_iods(str(tmp_path / "missing"))
    p.write_bytes(b"\xff\xfe\n")
    with pytest.raises(IodsConfError, match="not UTF-8"):
        load_iods(str(p))


def test_an_entry_may_name_its_data_server():
    text = """node1
node2:2051 ds=192.0.2.2:2049   # behind a forwarder
127.0.0.1:2052 ds=0.0.0.0
10.0.0.4 ds=192.0.2.4
"""
    assert parse_entries(text) == [
        IodEntry("node1", 2050, None, None), IodEntry("node2", 2051, "192.0.2.2", 2049),
        IodEntry("127.0.0.1", 2052, WILDCARD, None), IodEntry("10.0.0.4", 2050, "192.0.2.4", None)]
    # The iods themselves are what they were: files find their stripes by them.
    assert parse_iods(text) == [("node1", 2050), ("node2", 2051), ("127.0.0.1", 2052),
                                ("10.0.0.4", 2050)]


@pytest.mark.parametrize("entry", [IodEntry("node1", 2050, None, None),
                                   IodEntry("10.0.0.1", 7, "10.0.0.9", None),
                                   IodEntry("127.0.0.1", 2051, WILDCARD, 3051)])
def test_format_reads_back(entry):
    assert parse_entries(format_iod(*entry)) == [entry]


@pytest.mark.parametrize("line, fragment", [
    ("node1 ds=storage.example", "IPv4 address"),
    ("node1 ds=10.0.0.1:0", "not in 1..65535"),
    ("node1 ds=10.0.0.1:x", "not in 1..65535"),
    ("node1 ds=", "IPv4 address"),
    ("node1 ds=10.0.0.1 ds=10.0.0.2", "ds= given twice"),
    ("node1 mirror=node2", "optionally ds=ADDRESS[:PORT]"),
])
def test_a_bad_data_server_names_file_and_line(line, fragment):
    with pytest.raises(IodsConfError) as e:
        parse_entries(f"node0\n{line}\n", "f")
    assert str(e.value).startswith("f:2: ") and fragment in str(e.value)


def test_load_entries(tmp_path):
    p = tmp_path / "iods.conf"
    p.write_text("a ds=10.0.0.1:3050\nb:7\n")
    assert load_entries(str(p)) == [IodEntry("a", 2050, "10.0.0.1", 3050),
                                    IodEntry("b", 7, None, None)]
    assert load_iods(str(p)) == [("a", 2050), ("b", 7)]
