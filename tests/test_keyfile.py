import os

import pytest

from common import keyfile
from common.keyfile import KeyFileError


def test_generated_key_is_private_and_loads(tmp_path):
    path = tmp_path / "cluster.key"
    keys = keyfile.generate(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert keyfile.load(str(path)).current == keys.current and len(keys.current) == 32


def test_a_key_others_can_read_is_refused(tmp_path):
    path = tmp_path / "k"
    keyfile.generate(str(path))
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keyfile.load(str(path))


def test_rotation_file_signs_with_the_first_and_verifies_both():
    keys = keyfile.parse("2:" + "bb" * 32 + "\n1:" + "aa" * 32 + "\n")
    assert keys.current_id == 2 and set(keys.by_id) == {1, 2}


@pytest.mark.parametrize("text,where", [
    ("", "no key"), ("x", ":1:"), ("0:abcd\n", "shorter"),
    ("0:" + "aa" * 32 + "\n0:" + "bb" * 32, ":2: key id 0 listed twice")])
def test_errors_name_the_line(text, where):
    with pytest.raises(KeyFileError, match=where):
        keyfile.parse(text, "k")


@pytest.mark.parametrize("kid", ["\u0661", "+1", "1_0", "0x1"])
def test_key_ids_are_ascii_decimal_numbers(kid):
    with pytest.raises(KeyFileError, match="expected KEY_ID:HEX"):
        keyfile.parse(f"{kid}:" + "aa" * 32 + "\n", "k")
