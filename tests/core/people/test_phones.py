"""core.people.phones: what a number is good for (dialling back in E.164, SMS to mobiles only)."""

from __future__ import annotations

import pytest

from core.people.phones import dialable, is_mobile


@pytest.mark.parametrize("phone, e164, mobile", [
    ("13800138000", "+8613800138000", True),
    ("+86 138-0013-8000", "+8613800138000", True),
    ("tel:+8613800138000", "+8613800138000", True),
    ("05987512301", "+865987512301", False),  # a landline in 三明: the call covers it, no SMS
    ("0591-87654321", "+8659187654321", False),
    ("+14155550143", "+14155550143", False),  # mobile or landline: phonenumbers cannot tell, no SMS
    ("12345", None, False),
    ("", None, False),
    (None, None, False),
])
def test_dialable_and_mobile(phone, e164, mobile):
    assert dialable(phone) == e164
    assert is_mobile(phone) is mobile
