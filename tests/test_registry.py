"""The name -> object registry."""

from __future__ import annotations

import pytest

from apo.registry import Registry, UnknownNameError


def test_add_get_register():
    r: Registry[int] = Registry("widget")
    assert r.add("a", 1) == 1

    @r.register("b")
    def b():
        return 2

    assert r.get("a") == 1 and r.get("b") is b
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"]
    assert "a" in r and "c" not in r


def test_duplicate_name_is_refused():
    r: Registry[int] = Registry("widget")
    r.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        r.add("a", 2)
    assert r.get("a") == 1


def test_unknown_name_lists_valid_names():
    r: Registry[int] = Registry("widget")
    r.add("alpha", 1)
    r.add("beta", 2)
    with pytest.raises(UnknownNameError) as exc:
        r.get("alpah")
    msg = str(exc.value)
    assert msg == "unknown widget 'alpah'. Valid names: alpha, beta"  # plain text, not a KeyError repr
    assert isinstance(exc.value, KeyError)


def test_fallback_builds_entries_and_is_listed():
    built = []

    def build(name):
        if name.startswith("auto-"):
            built.append(name)
            return len(name)
        return None

    r: Registry[int] = Registry("widget")
    r.add("fixed", 0)
    r.set_fallback(build, lambda: ["auto-x", "auto-yy", "fixed"])
    assert r.get("auto-x") == 6 and built == ["auto-x"]
    assert r.get("fixed") == 0 and built == ["auto-x"]  # explicit entries win, no fallback call
    assert "auto-x" not in r  # not registered by a lookup
    assert r.names() == ["fixed"]
    assert r.names(include_fallback=True) == ["fixed", "auto-x", "auto-yy"]  # no duplicates
    with pytest.raises(UnknownNameError, match="Valid names: fixed, auto-x, auto-yy"):
        r.get("nope")


def test_constructor_fallback():
    r: Registry[str] = Registry("thing", fallback=lambda n: n.upper() if n.islower() else None)
    assert r.get("abc") == "ABC"
    with pytest.raises(UnknownNameError):
        r.get("ABC")
