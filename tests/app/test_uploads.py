"""Upload slots: a key at its limit is refused, others are not, and slots come back."""

from __future__ import annotations

from app.uploads import UploadSlots


def test_a_key_at_its_limit_is_refused_and_others_are_not() -> None:
    slots = UploadSlots(limit=2)
    assert slots.take("alice")
    assert slots.take("alice")
    assert not slots.take("alice")
    assert slots.take("bob")
    slots.give_back("alice")
    assert slots.take("alice")
