"""Sealing (randomised AES-GCM) of published values nobody compares: no frequencies, bound to the row."""

from __future__ import annotations

import pyarrow as pa
import pytest

from privacy.keyring import Keyring
from privacy.operators import CiphertextError, seal_array, unseal_value


def test_equal_values_seal_differently_and_open_only_for_their_row() -> None:
    keyring = Keyring.generate()
    sealed = seal_array(pa.array(["e1.same", "e1.same", None]), keyring, "person_name", ["k1", "k2", "k3"])
    first, second, missing = sealed.to_pylist()
    assert missing is None
    assert first != second and first.startswith("r1.") and second.startswith("r1.")
    assert unseal_value(first, keyring, "person_name", "k1") == "e1.same"
    assert unseal_value(second, keyring, "person_name", "k2") == "e1.same"
    with pytest.raises(CiphertextError, match="for this row"):
        unseal_value(first, keyring, "person_name", "k2")  # moved to another row
    with pytest.raises(CiphertextError, match="for this row"):
        unseal_value(first, keyring, "contact", "k1")  # another domain
    with pytest.raises(CiphertextError, match="for this row"):
        unseal_value(first, Keyring.generate(), "person_name", "k1")  # another keyring
    with pytest.raises(CiphertextError, match="not a sealed value"):
        unseal_value("e1.abc", keyring, "person_name", "k1")


def test_a_rotated_keyring_opens_what_the_old_version_sealed() -> None:
    keyring = Keyring.generate()
    sealed = seal_array(pa.array(["e1.x"]), keyring, "contact", ["k"])[0].as_py()
    rotated = keyring.rotated()
    assert rotated.active_version == 2
    assert seal_array(pa.array(["e1.x"]), rotated, "contact", ["k"])[0].as_py().startswith("r2.")
    assert unseal_value(sealed, rotated, "contact", "k") == "e1.x"
