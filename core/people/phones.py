"""What a phone number is good for: dialling it back (E.164), and whether it takes SMS
(a mobile, by ``phonenumbers``' number type). Numbers are read as dialled in mainland
China, like ``core.places.routing.normalise_phone``."""

from __future__ import annotations

import unicodedata

import phonenumbers

REGION = "CN"


def parse(phone: str | None) -> phonenumbers.PhoneNumber | None:
    """The number in ``phone`` if it is a valid one, else ``None``."""
    if not phone:
        return None
    text = unicodedata.normalize("NFKC", str(phone)).strip()
    text = text[4:] if text.lower().startswith("tel:") else text
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def dialable(phone: str | None) -> str | None:
    """``phone`` in E.164 (``+8613800138000``), what Twilio dials; ``None`` if it is not a valid number."""
    number = parse(phone)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if number else None


def is_mobile(phone: str | None) -> bool:
    """A mobile number: it can receive SMS. Landlines (and numbers whose type cannot be
    told apart from a landline's) get none."""
    number = parse(phone)
    return number is not None and phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
