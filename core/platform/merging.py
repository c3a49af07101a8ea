"""The one deep merge of TOML tables: a deployment's rules file over the packaged one
(``core.platform.rules``), a catalogue folder's words over the packaged ones
(``core.platform.i18n``), a test's overrides over a flow."""

from __future__ import annotations

import copy


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``, key by key: a table replaces only the keys it names, any
    other value (a list too, ``[[category]]`` included) replaces the whole value. Neither
    argument is changed; the result shares nothing mutable with them."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
