"""segroute.toml: strict loading, the path and base-URL precedence, link edits in place, atomic saves."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tomlkit import TOMLDocument

from segroute.config import (
    BASE_URL_ENV,
    CONFIG_ENV,
    DEFAULT_API_URL,
    Config,
    ConfigFile,
    Link,
    add_link,
    config_document,
    config_path,
    config_text,
    load_config,
    make_link,
    remove_links,
    resolve_api_url,
    save_config,
)
from segroute.errors import ConfigError, ExitCode, UsageError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")


def write(path: Path, text: str) -> Path:
    """Write a config file as UTF-8 and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, text: str) -> str:
    """The message of the ConfigError that loading ``text`` from ``path`` raises."""
    write(path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, must_exist=True)
    return str(info.value)


def problems(message: str) -> list[str]:
    """The bullet lines of an ``invalid config`` message, without their bullet."""
    return [line.removeprefix("  - ") for line in message.splitlines()[1:]]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """Where a test's segroute.toml lives."""
    return tmp_path / "segroute.toml"


# --- the example file -------------------------------------------------------------------------


def test_example_config_loads() -> None:
    loaded = load_config(ROOT / "config.example.toml", must_exist=True)
    assert loaded.exists is True
    assert loaded.config.api_url == "https://api.courier.com"
    assert loaded.config.update_profiles is True
    assert len(loaded.config.links) > 0
    assert [(link.event, link.automation, link.brand) for link in loaded.config.links] == [
        ("Signed Up", "welcome-flow", None),
        ("Checkout Complete", "order-confirmation", None),
        ("Checkout Complete", "loyalty-points", "storefront-brand"),
        ("Password Reset Requested", "password-reset", None),
    ]


def test_example_config_groups_links_by_event_in_file_order() -> None:
    config = load_config(ROOT / "config.example.toml", must_exist=True).config
    grouped = config.links_by_event()
    assert list(grouped) == ["Signed Up", "Checkout Complete", "Password Reset Requested"]
    assert [link.automation for link in grouped["Checkout Complete"]] == [
        "order-confirmation",
        "loyalty-points",
    ]


def test_minimal_config_gets_defaults(cfg: Path) -> None:
    loaded = load_config(write(cfg, ""), must_exist=True)
    assert loaded.exists is True
    assert loaded.raw == {}
    assert loaded.config == Config()
    assert loaded.config.api_url is None
    assert loaded.config.update_profiles is True
    assert loaded.config.links == []


def test_config_api_url_loses_its_trailing_slash(cfg: Path) -> None:
    loaded = load_config(write(cfg, 'api_url = "https://api.eu.courier.com/"\n'), must_exist=True)
    assert loaded.config.api_url == "https://api.eu.courier.com"
    assert loaded.raw == {"api_url": "https://api.eu.courier.com/"}


# --- strict validation --------------------------------------------------------------------------


def test_unknown_top_level_key_names_file_and_key(cfg: Path) -> None:
    message = config_error(cfg, 'api_url = "https://api.courier.com"\nupdate_profile = false\n')
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == ["update_profile: unknown key"]


def test_unknown_key_inside_a_link_names_its_index(cfg: Path) -> None:
    text = (
        '[[links]]\nevent = "A"\nautomation = "a"\n\n'
        '[[links]]\nevent = "B"\nautomation = "b"\ncolour = "red"\n'
    )
    message = config_error(cfg, text)
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == ["links[1] (event 'B').colour: unknown key"]


def test_wrong_type_names_key_and_value(cfg: Path) -> None:
    message = config_error(cfg, 'update_profiles = "yes"\n')
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == ["update_profiles: input should be a valid boolean, got str 'yes'"]


def test_integer_is_not_a_string_in_strict_mode(cfg: Path) -> None:
    message = config_error(cfg, '[[links]]\nevent = "A"\nautomation = 42\n')
    [problem] = problems(message)
    assert problem.startswith("links[0] (event 'A').automation: ")
    assert problem.endswith("got int 42")


def test_missing_automation_is_named(cfg: Path) -> None:
    message = config_error(cfg, '[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "B"\n')
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == ["links[1] (event 'B'): names no automation or journey: give one of the two"]


def test_empty_event_name_is_an_error(cfg: Path) -> None:
    message = config_error(cfg, '[[links]]\nevent = ""\nautomation = "a"\n')
    assert message.startswith(f"{cfg}: invalid config:\n")
    [problem] = problems(message)
    assert problem.startswith("links[0].event: ")
    assert "at least 1 character" in problem


def test_empty_brand_is_an_error(cfg: Path) -> None:
    message = config_error(cfg, '[[links]]\nevent = "A"\nautomation = "a"\nbrand = ""\n')
    [problem] = problems(message)
    assert problem.startswith("links[0] (event 'A').brand: ")


@pytest.mark.parametrize("automation", [".", ".."])
def test_an_automation_that_would_name_another_url_path_is_an_error(cfg: Path, automation: str) -> None:
    message = config_error(
        cfg,
        f'[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "B"\nautomation = "{automation}"\n',
    )
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == [
        f"links[1] (event 'B').automation: must not be {automation!r}: it would name another URL path"
    ]
    with pytest.raises(UsageError) as info:
        make_link("A", automation)
    assert str(info.value) == f"AUTOMATION must not be {automation!r}: it would name another URL path"


def test_automations_with_dots_that_name_no_other_path_are_valid(cfg: Path) -> None:
    text = "".join(
        f'[[links]]\nevent = "A"\nautomation = "{name}"\n' for name in ("...", "a.b", "../x", ".x")
    )
    loaded = load_config(write(cfg, text), must_exist=True)
    assert [link.automation for link in loaded.config.links] == ["...", "a.b", "../x", ".x"]
    assert make_link("A", "...") == Link(event="A", automation="...")


def test_every_problem_is_listed(cfg: Path) -> None:
    message = config_error(cfg, 'colour = 1\nupdate_profiles = 3\n[[links]]\nautomation = "a"\n')
    lines = problems(message)
    assert len(lines) == 3
    assert "colour: unknown key" in lines
    assert "links[0].event: required key is missing" in lines
    assert any(line.startswith("update_profiles: ") for line in lines)


@pytest.mark.parametrize("url", ["ftp://api.courier.com", "api.courier.com", "https://", "https:///", ""])
def test_bad_api_url_in_config_names_file_and_key(cfg: Path, url: str) -> None:
    message = config_error(cfg, f'api_url = "{url}"\n')
    assert message.startswith(f"{cfg}: invalid config:\n")
    [problem] = problems(message)
    assert problem.startswith("api_url: ")
    assert repr(url) in problem


def test_invalid_toml_names_the_file(cfg: Path) -> None:
    message = config_error(cfg, "links = [\n")
    assert message.startswith(f"{cfg}: not valid TOML: ")


def test_non_utf8_file_names_the_file(cfg: Path) -> None:
    cfg.write_bytes(b'api_url = "https://api.courier.com"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg, must_exist=True)
    assert str(info.value) == f"{cfg}: not UTF-8 text"


def test_config_error_is_a_usage_error() -> None:
    assert ConfigError("x").exit_code == ExitCode.USAGE


def test_duplicate_link_names_the_repeat(cfg: Path) -> None:
    text = (
        '[[links]]\nevent = "A"\nautomation = "a"\n\n'
        '[[links]]\nevent = "B"\nautomation = "a"\n\n'
        '[[links]]\nevent = "A"\nautomation = "a"\nbrand = "other"\n'
    )
    message = config_error(cfg, text)
    assert message.startswith(f"{cfg}: invalid config:\n")
    [problem] = problems(message)
    assert problem.startswith("links[2]: repeats links[0]")
    assert problem == "links[2]: repeats links[0] ('A' -> automation 'a')"


def test_same_event_to_two_automations_is_not_a_duplicate(cfg: Path) -> None:
    text = '[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "A"\nautomation = "b"\n'
    loaded = load_config(write(cfg, text), must_exist=True)
    assert [link.automation for link in loaded.config.links] == ["a", "b"]


# --- which file ---------------------------------------------------------------------------------


def test_config_path_option_comes_first() -> None:
    assert config_path("mine.toml", {CONFIG_ENV: "env.toml"}) == (Path("mine.toml"), True)


def test_config_path_env_comes_second() -> None:
    assert config_path(None, {CONFIG_ENV: "env.toml"}) == (Path("env.toml"), True)


def test_config_path_default_is_local_file() -> None:
    assert config_path(None, {}) == (Path("segroute.toml"), False)


def test_config_path_ignores_empty_values() -> None:
    assert config_path("", {CONFIG_ENV: ""}) == (Path("segroute.toml"), False)
    assert config_path("", {CONFIG_ENV: "env.toml"}) == (Path("env.toml"), True)


def test_missing_file_is_an_empty_config_unless_required(cfg: Path) -> None:
    loaded = load_config(cfg, must_exist=False)
    assert loaded.path == cfg
    assert loaded.exists is False
    assert loaded.raw == {}
    assert loaded.config == Config()
    assert loaded.config.links == []


def test_missing_file_raises_when_required(cfg: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(cfg, must_exist=True)
    assert str(info.value) == f"{cfg}: no such config file"


def test_unreadable_path_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, must_exist=False)
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")


# --- editing links ------------------------------------------------------------------------------


def test_add_link_to_empty_raw() -> None:
    raw: dict[str, Any] = {}
    assert add_link(raw, Link(event="A", automation="a")) == "added"
    assert raw == {"links": [{"event": "A", "automation": "a"}]}


def test_add_link_added_unchanged_updated() -> None:
    raw: dict[str, Any] = {"update_profiles": False, "links": [{"event": "A", "automation": "a"}]}
    assert add_link(raw, Link(event="A", automation="a")) == "unchanged"
    assert raw["links"] == [{"event": "A", "automation": "a"}]

    assert add_link(raw, Link(event="A", automation="b", brand="x")) == "added"
    assert raw["links"] == [
        {"event": "A", "automation": "a"},
        {"event": "A", "automation": "b", "brand": "x"},
    ]

    assert add_link(raw, Link(event="A", automation="a", brand="y")) == "updated"
    assert raw["links"][0] == {"event": "A", "automation": "a", "brand": "y"}

    assert add_link(raw, Link(event="A", automation="a", brand="y")) == "unchanged"

    assert add_link(raw, Link(event="A", automation="a")) == "updated"
    assert raw["links"][0] == {"event": "A", "automation": "a"}

    assert raw["update_profiles"] is False
    assert len(raw["links"]) == 2


def test_remove_links_counts() -> None:
    raw: dict[str, Any] = {
        "links": [
            {"event": "A", "automation": "a"},
            {"event": "A", "automation": "b"},
            {"event": "B", "automation": "a"},
        ]
    }
    assert remove_links(raw, "A", "b") == 1
    assert raw["links"] == [{"event": "A", "automation": "a"}, {"event": "B", "automation": "a"}]
    assert remove_links(raw, "A", "zzz") == 0
    assert remove_links(raw, "Nope", None) == 0
    assert len(raw["links"]) == 2


def test_remove_all_links_of_an_event() -> None:
    raw: dict[str, Any] = {
        "links": [
            {"event": "A", "automation": "a"},
            {"event": "B", "automation": "a"},
            {"event": "A", "automation": "b"},
        ]
    }
    assert remove_links(raw, "A", None) == 2
    assert raw["links"] == [{"event": "B", "automation": "a"}]


def test_remove_links_from_empty_raw() -> None:
    raw: dict[str, Any] = {}
    assert remove_links(raw, "A", None) == 0
    assert raw == {}


# --- saving -------------------------------------------------------------------------------------


def test_save_keeps_other_settings(cfg: Path) -> None:
    write(cfg, 'api_url = "https://api.eu.courier.com"\nupdate_profiles = false\n')
    loaded = load_config(cfg, must_exist=True)
    assert add_link(loaded.raw, Link(event="Signed Up", automation="welcome", brand="b1")) == "added"
    save_config(cfg, loaded.raw)

    again = load_config(cfg, must_exist=True)
    assert again.raw == {
        "api_url": "https://api.eu.courier.com",
        "update_profiles": False,
        "links": [{"event": "Signed Up", "automation": "welcome", "brand": "b1"}],
    }
    assert again.config.api_url == "https://api.eu.courier.com"
    assert again.config.update_profiles is False
    assert again.config.links == [Link(event="Signed Up", automation="welcome", brand="b1")]


def test_save_round_trips_the_example(tmp_path: Path) -> None:
    original = load_config(ROOT / "config.example.toml", must_exist=True)
    target = tmp_path / "segroute.toml"
    save_config(target, original.raw)
    copy = load_config(target, must_exist=True)
    assert copy.raw == original.raw
    assert copy.config == original.config


def test_save_then_remove_then_save(cfg: Path) -> None:
    write(cfg, '[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "A"\nautomation = "b"\n')
    loaded = load_config(cfg, must_exist=True)
    assert remove_links(loaded.raw, "A", "a") == 1
    save_config(cfg, loaded.raw)
    assert load_config(cfg, must_exist=True).config.links == [Link(event="A", automation="b")]


def test_save_leaves_no_temp_files(cfg: Path) -> None:
    write(cfg, "update_profiles = true\n")
    save_config(cfg, {"update_profiles": False, "links": [{"event": "A", "automation": "a"}]})
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["segroute.toml"]


def test_save_creates_a_missing_file(cfg: Path) -> None:
    save_config(cfg, {"links": [{"event": "A", "automation": "a"}]})
    assert load_config(cfg, must_exist=True).config.links == [Link(event="A", automation="a")]
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["segroute.toml"]


def test_save_to_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_config(Path("segroute.toml"), {"update_profiles": False})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segroute.toml"]
    assert load_config(tmp_path / "segroute.toml", must_exist=True).config.update_profiles is False


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_save_keeps_the_file_mode(cfg: Path, mode: int) -> None:
    write(cfg, "update_profiles = true\n")
    os.chmod(cfg, mode)
    save_config(cfg, {"update_profiles": False})
    assert stat.S_IMODE(cfg.stat().st_mode) == mode
    assert load_config(cfg, must_exist=True).config.update_profiles is False


def test_save_refuses_an_invalid_raw_config(cfg: Path) -> None:
    original = b'update_profiles = false\n\n[[links]]\nevent = "A"\nautomation = "a"\n'
    cfg.write_bytes(original)
    with pytest.raises(ConfigError) as info:
        save_config(cfg, {"update_profiles": False, "links": [{"event": "A"}]})
    message = str(info.value)
    assert message.startswith(f"{cfg}: invalid config:\n")
    assert problems(message) == ["links[0] (event 'A'): names no automation or journey: give one of the two"]
    assert cfg.read_bytes() == original
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["segroute.toml"]


def test_save_refuses_duplicate_links(cfg: Path) -> None:
    original = b"update_profiles = true\n"
    cfg.write_bytes(original)
    duplicate = {"event": "A", "automation": "a"}
    with pytest.raises(ConfigError) as info:
        save_config(cfg, {"links": [duplicate, dict(duplicate)]})
    assert problems(str(info.value))[0].startswith("links[1]: repeats links[0]")
    assert cfg.read_bytes() == original


# --- editing in place -----------------------------------------------------------------------


def edited(text: str, change: Callable[[TOMLDocument], object]) -> tuple[object, str]:
    """What ``change`` returns for the config ``text`` opened for editing, and the text saved after it."""
    document = config_document(ConfigFile(Path("segroute.toml"), True, {}, Config(), text))
    result = change(document)
    return result, config_text(Path("segroute.toml"), document)


SHIPPED = '[[links]]\nevent = "Order Shipped"\nautomation = "shipping-update"\nbrand = "storefront-brand"\n'


def test_link_then_unlink_keeps_the_example_byte_for_byte(cfg: Path) -> None:
    cfg.write_bytes((ROOT / "config.example.toml").read_bytes())
    shipped = Link(event="Order Shipped", automation="shipping-update", brand="storefront-brand")
    document = config_document(load_config(cfg, must_exist=True))
    assert add_link(document, shipped) == "added"
    save_config(cfg, document)
    assert cfg.read_text(encoding="utf-8") == EXAMPLE + "\n" + SHIPPED

    document = config_document(load_config(cfg, must_exist=True))
    assert remove_links(document, "Order Shipped", "shipping-update") == 1
    save_config(cfg, document)
    assert cfg.read_bytes() == (ROOT / "config.example.toml").read_bytes()
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["segroute.toml"]


def test_a_new_brand_edits_the_table_in_place() -> None:
    welcome = 'automation = "welcome-flow"\n'
    change, text = edited(
        EXAMPLE, lambda doc: add_link(doc, Link(event="Signed Up", automation="welcome-flow", brand="b1"))
    )
    assert (change, text) == ("updated", EXAMPLE.replace(welcome, welcome + 'brand = "b1"\n'))

    loyalty = Link(event="Checkout Complete", automation="loyalty-points", brand="other-brand")
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, loyalty))
    assert (change, text) == ("updated", EXAMPLE.replace('"storefront-brand"', '"other-brand"'))

    no_brand = Link(event="Checkout Complete", automation="loyalty-points")
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, no_brand))
    assert (change, text) == ("updated", EXAMPLE.replace('brand = "storefront-brand"\n', ""))


def test_unlink_removes_exactly_the_matching_tables() -> None:
    removed, text = edited(EXAMPLE, lambda doc: remove_links(doc, "Checkout Complete", None))
    checkout = (
        '[[links]]\nevent = "Checkout Complete"\nautomation = "order-confirmation"\n\n'
        '[[links]]\nevent = "Checkout Complete"\nautomation = "loyalty-points"\n'
        'brand = "storefront-brand"\n\n'
    )
    assert checkout in EXAMPLE
    assert (removed, text) == (2, EXAMPLE.replace(checkout, ""))

    # The last table: the blank line before it goes too, so the file ends as it did.
    removed, text = edited(
        EXAMPLE, lambda doc: remove_links(doc, "Password Reset Requested", "password-reset")
    )
    reset = '\n[[links]]\nevent = "Password Reset Requested"\nautomation = "password-reset"\n'
    assert (removed, text) == (1, EXAMPLE.replace(reset, ""))


def test_unlinking_every_link_leaves_the_settings_and_comments() -> None:
    def unlink_all(doc: TOMLDocument) -> int:
        return sum(
            remove_links(doc, event, None)
            for event in ("Signed Up", "Checkout Complete", "Password Reset Requested")
        )

    removed, text = edited(EXAMPLE, unlink_all)
    assert (removed, text) == (4, EXAMPLE[: EXAMPLE.index("\n\n[[links]]")] + "\n")
    assert tomllib.loads(text) == {"api_url": "https://api.courier.com", "update_profiles": True}


COMMENTED = """\
update_profiles = false  # profiles are synced elsewhere

# the welcome mail
[[links]]
event = "Signed Up"  # from the web app
automation = "welcome-flow"
brand = "acme"  # the new look

# receipts, since March
[[links]]
event = "Checkout Complete"
# not the order-confirmation automation
automation = "receipt"
"""


def test_comments_and_a_branded_table_survive_link_and_unlink() -> None:
    change, text = edited(COMMENTED, lambda doc: add_link(doc, Link(event="A", automation="a")))
    assert (change, text) == ("added", COMMENTED + '\n[[links]]\nevent = "A"\nautomation = "a"\n')

    change, text = edited(
        COMMENTED,
        lambda doc: add_link(doc, Link(event="Signed Up", automation="welcome-flow", brand="acme-2")),
    )
    assert (change, text) == ("updated", COMMENTED.replace('"acme"', '"acme-2"'))

    # The comment under the removed table's last key leads to the next table: it stays, above it.
    removed, text = edited(COMMENTED, lambda doc: remove_links(doc, "Signed Up", None))
    table = (
        '[[links]]\nevent = "Signed Up"  # from the web app\nautomation = "welcome-flow"\n'
        'brand = "acme"  # the new look\n\n'
    )
    assert (removed, text) == (1, COMMENTED.replace(table, ""))

    removed, text = edited(COMMENTED, lambda doc: remove_links(doc, "Checkout Complete", "receipt"))
    assert (removed, text) == (1, COMMENTED[: COMMENTED.index('[[links]]\nevent = "Checkout')])


def test_a_brand_is_added_under_the_last_key_not_under_the_comments_after_it() -> None:
    unbranded = COMMENTED.replace('brand = "acme"  # the new look\n', "")
    welcome = Link(event="Signed Up", automation="welcome-flow", brand="acme")
    assert edited(unbranded, lambda doc: add_link(doc, welcome)) == (
        "updated",
        COMMENTED.replace("  # the new look", ""),
    )
    receipt = Link(event="Checkout Complete", automation="receipt", brand="acme")
    assert edited(COMMENTED + "# the end\n", lambda doc: add_link(doc, receipt)) == (
        "updated",
        COMMENTED + 'brand = "acme"\n# the end\n',
    )


def test_comments_after_the_last_table_stay_when_it_goes() -> None:
    a, b = '[[links]]\nevent = "A"\nautomation = "a"\n', '[[links]]\nevent = "B"\nautomation = "b"\n'
    text = f"{a}\n{b}\n# more to come\n"
    removed, after = edited(text, lambda doc: remove_links(doc, "B", None))
    assert (removed, after) == (1, f"{a}\n# more to come\n")
    removed, after = edited(after, lambda doc: remove_links(doc, "A", None))
    assert (removed, after) == (1, "# more to come\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Packed tables stay packed.
        (
            '[[links]]\nevent = "A"\nautomation = "a"\n[[links]]\nevent = "B"\nautomation = "b"\n',
            '[[links]]\nevent = "A"\nautomation = "a"\n[[links]]\nevent = "B"\nautomation = "b"\n'
            '[[links]]\nevent = "N"\nautomation = "n"\n',
        ),
        # A file that ends without a line break, or with a blank line.
        (
            '[[links]]\nevent = "A"\nautomation = "a"',
            '[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "N"\nautomation = "n"\n',
        ),
        (
            '[[links]]\nevent = "A"\nautomation = "a"\n\n',
            '[[links]]\nevent = "A"\nautomation = "a"\n\n[[links]]\nevent = "N"\nautomation = "n"\n',
        ),
        # No links yet, or an empty array: a [[links]] table.
        ("", '[[links]]\nevent = "N"\nautomation = "n"\n'),
        ("# mine\n", '# mine\n\n[[links]]\nevent = "N"\nautomation = "n"\n'),
        (
            "links = []\nupdate_profiles = false\n",
            'update_profiles = false\n\n[[links]]\nevent = "N"\nautomation = "n"\n',
        ),
        # Inline tables stay inline, spaced as the others are.
        (
            'links = [{event = "A", automation = "a"}]\n',
            'links = [{event = "A", automation = "a"}, {event = "N", automation = "n"}]\n',
        ),
        # What segroute's link wrote before it kept comments.
        (
            'update_profiles = true\nlinks = [\n    { event = "A", automation = "a" },\n]\n',
            'update_profiles = true\nlinks = [\n    { event = "A", automation = "a" },\n'
            '    { event = "N", automation = "n" },\n]\n',
        ),
    ],
)
def test_a_new_link_is_written_as_the_others_are(text: str, expected: str) -> None:
    assert edited(text, lambda doc: add_link(doc, Link(event="N", automation="n"))) == ("added", expected)


def test_inline_links_are_edited_inline() -> None:
    text = 'links = [{ event = "A", automation = "a" }, { event = "B", automation = "b", brand = "x" }]\n'
    assert edited(text, lambda doc: add_link(doc, Link(event="A", automation="a", brand="y"))) == (
        "updated",
        text.replace('automation = "a" }', 'automation = "a", brand = "y" }'),
    )
    assert edited(text, lambda doc: add_link(doc, Link(event="B", automation="b"))) == (
        "updated",
        'links = [{ event = "A", automation = "a" }, { event = "B", automation = "b" }]\n',
    )
    assert edited(text, lambda doc: remove_links(doc, "A", None)) == (
        1,
        'links = [{ event = "B", automation = "b", brand = "x" }]\n',
    )
    assert edited(text, lambda doc: remove_links(doc, "B", "b")) == (
        1,
        'links = [{ event = "A", automation = "a" }]\n',
    )


def test_an_edit_is_checked_before_it_is_saved(cfg: Path) -> None:
    original = b'update_profiles = false\n\n[[links]]\nevent = "A"\nautomation = "a"\n'
    cfg.write_bytes(original)
    document = config_document(load_config(cfg, must_exist=True))
    document["colour"] = "red"
    with pytest.raises(ConfigError) as info:
        save_config(cfg, document)
    assert problems(str(info.value)) == ["colour: unknown key"]
    assert cfg.read_bytes() == original


def test_save_keeps_a_byte_order_mark(cfg: Path) -> None:
    cfg.write_bytes(b"\xef\xbb\xbfupdate_profiles = false\n")
    document = config_document(load_config(cfg, must_exist=True))
    add_link(document, Link(event="A", automation="a"))
    save_config(cfg, document)
    assert (
        cfg.read_bytes()
        == b'\xef\xbb\xbfupdate_profiles = false\n\n[[links]]\nevent = "A"\nautomation = "a"\n'
    )


@pytest.mark.parametrize(
    "name",
    [
        'say "hi"',
        "back\\slash",
        "esc\x1b[31m",
        "new\nline",
        "tab\t",
        "del\x7f",
        "para\u2028",
        "🎉",
        " spaced ",
    ],
)
def test_awkward_names_are_escaped_and_read_back(name: str) -> None:
    link = Link(event=name, automation=name, brand=name)
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, link))
    assert change == "added"
    assert tomllib.loads(text)["links"][-1] == {"event": name, "automation": name, "brand": name}
    assert edited(text, lambda doc: remove_links(doc, name, name)) == (1, EXAMPLE)


EXAMPLE_LINKS = {(link["event"], link.get("automation")) for link in tomllib.loads(EXAMPLE)["links"]}
names = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20).filter(str.strip)


@settings(max_examples=100, deadline=None)
@given(event=names, automation=names.filter(lambda name: name not in (".", "..")), brand=st.none() | names)
def test_any_link_is_added_and_removed_without_touching_the_rest(
    event: str, automation: str, brand: str | None
) -> None:
    assume((event, automation) not in EXAMPLE_LINKS)
    link = Link(event=event, automation=automation, brand=brand)
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, link))
    assert change == "added"
    assert text.startswith(EXAMPLE + "\n[[links]]\n")
    assert tomllib.loads(text)["links"][-1] == link.model_dump(exclude_none=True)
    assert edited(text, lambda doc: remove_links(doc, event, automation)) == (1, EXAMPLE)


# --- the base URL -------------------------------------------------------------------------------


def test_api_url_option_comes_first() -> None:
    config = Config(api_url="https://config.example")
    environ = {BASE_URL_ENV: "https://env.example"}
    assert resolve_api_url("https://option.example", environ, config) == "https://option.example"


def test_api_url_env_comes_second() -> None:
    config = Config(api_url="https://config.example")
    assert resolve_api_url(None, {BASE_URL_ENV: "https://env.example"}, config) == "https://env.example"


def test_api_url_config_comes_third() -> None:
    config = Config(api_url="https://config.example")
    assert resolve_api_url(None, {}, config) == "https://config.example"


def test_api_url_default_comes_last() -> None:
    assert resolve_api_url(None, {}, Config()) == "https://api.courier.com"
    assert DEFAULT_API_URL == "https://api.courier.com"


def test_api_url_empty_values_are_unset() -> None:
    assert resolve_api_url("", {BASE_URL_ENV: ""}, Config()) == "https://api.courier.com"


def test_api_url_trailing_slash_is_stripped() -> None:
    assert resolve_api_url("https://option.example/", {}, Config()) == "https://option.example"
    assert (
        resolve_api_url(None, {BASE_URL_ENV: "http://127.0.0.1:8080//"}, Config()) == "http://127.0.0.1:8080"
    )
    assert (
        resolve_api_url(None, {}, Config(api_url="https://config.example/v1/")) == "https://config.example/v1"
    )


def test_bad_api_url_option_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_url(
            "api.courier.com", {BASE_URL_ENV: "https://env.example"}, Config(), source="--api-url"
        )
    message = str(info.value)
    assert message.startswith("--api-url: ")
    assert "'api.courier.com'" in message


def test_bad_api_url_env_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_url(None, {BASE_URL_ENV: "ftp://env.example"}, Config())
    message = str(info.value)
    assert message.startswith(f"{BASE_URL_ENV}: ")
    assert "'ftp://env.example'" in message


def test_a_byte_order_mark_is_allowed(cfg: Path) -> None:
    cfg.write_bytes(b"\xef\xbb\xbfupdate_profiles = false\n")
    assert load_config(cfg, must_exist=True).config.update_profiles is False


def test_save_through_a_symlink_rewrites_its_target(tmp_path: Path) -> None:
    real = tmp_path / "shared" / "segroute.toml"
    real.parent.mkdir()
    write(real, "update_profiles = false\n")
    link = tmp_path / "segroute.toml"
    link.symlink_to(real)
    loaded = load_config(link, must_exist=True)
    add_link(loaded.raw, Link(event="A", automation="b"))
    save_config(link, loaded.raw)
    assert link.is_symlink()
    assert load_config(real, must_exist=True).config.links == [Link(event="A", automation="b")]


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("http://LOCALHOST:8080/", "http://localhost:8080"),
        ("HTTPS://API.Courier.COM:443/", "https://api.courier.com"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("https://api.courier.com:80", "https://api.courier.com:80"),
        ("http://[::1]:80/", "http://[::1]"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://Example.com/V1//", "https://example.com/V1"),
    ],
)
def test_api_urls_have_one_spelling(typed: str, canonical: str) -> None:
    """The ledger keys entries on the base URL: two spellings of one API must be one key."""
    assert resolve_api_url(typed, {}, Config()) == canonical
    assert Config(api_url=typed).api_url == canonical


@pytest.mark.parametrize(
    ("url", "message"),
    [("https://", "names no host: 'https://'"), ("http://h:99999", "has a port that is not a number")],
)
def test_an_api_url_without_a_host_or_with_a_bad_port_says_so(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_api_url(url, {}, Config())


# --- journeys, conditions and mappings ---------------------------------------------------------------


def test_a_link_names_an_automation_or_a_journey_never_both_nor_neither(cfg: Path) -> None:
    loaded = load_config(write(cfg, '[[links]]\nevent = "A"\njourney = "order-journey"\n'), must_exist=True)
    [link] = loaded.config.links
    assert (link.kind, link.template, link.label) == ("journey", "order-journey", "journey order-journey")
    both = config_error(cfg, '[[links]]\nevent = "A"\nautomation = "a"\njourney = "j"\n')
    assert problems(both) == ["links[0] (event 'A'): names an automation and a journey: give one of the two"]
    neither = config_error(cfg, '[[links]]\nevent = "A"\nbrand = "b"\n')
    assert problems(neither) == ["links[0] (event 'A'): names no automation or journey: give one of the two"]
    branded = config_error(cfg, '[[links]]\nevent = "A"\njourney = "j"\nbrand = "b"\n')
    assert problems(branded) == [
        "links[0] (event 'A'): brand is for automations: a journey invoke carries none"
    ]


def test_an_automation_and_a_journey_of_one_id_may_both_be_linked_but_not_twice(cfg: Path) -> None:
    text = '[[links]]\nevent = "A"\nautomation = "x"\n\n[[links]]\nevent = "A"\njourney = "x"\n'
    assert len(load_config(write(cfg, text), must_exist=True).config.links) == 2
    twice = config_error(cfg, text + '\n[[links]]\nevent = "A"\njourney = "x"\nwhen = "true"\n')
    assert problems(twice) == ["links[2]: repeats links[1] ('A' -> journey 'x')"]


@pytest.mark.parametrize("key", ["when", "data", "recipient", "profile"])
def test_a_jq_syntax_error_is_a_config_error_that_names_the_link_and_the_key(cfg: Path, key: str) -> None:
    text = (
        '[[links]]\nevent = "A"\nautomation = "a"\n\n'
        f'[[links]]\nevent = "Order Completed"\nautomation = "b"\n{key} = ".properties.revenue >"\n'
    )
    message = config_error(cfg, text)
    assert problems(message) == [
        f"links[1] (event 'Order Completed').{key}: not a valid jq expression: "
        "syntax error, unexpected end of file (line 1, column 21)"
    ]
    unknown = config_error(cfg, f'[[links]]\nevent = "A"\nautomation = "a"\n{key} = "nosuch(1)"\n')
    assert problems(unknown) == [
        f"links[0] (event 'A').{key}: not a valid jq expression: nosuch/1 is not defined (line 1, column 1)"
    ]


def test_make_link_takes_a_journey_and_expressions_and_names_a_bad_one_by_its_flag() -> None:
    link = make_link("A", "j", journey=True, when=".x", data=".properties", recipient=None, profile=None)
    assert link == Link(event="A", journey="j", when=".x", data=".properties")
    with pytest.raises(UsageError) as info:
        make_link("A", "a", when=".x |")
    assert str(info.value) == (
        "--when: not a valid jq expression: syntax error, unexpected end of file (line 1, column 4)"
    )
    with pytest.raises(UsageError) as brand:
        make_link("A", "j", journey=True, brand="b")
    assert str(brand.value) == "--brand is for automations: a journey invoke carries none"
    with pytest.raises(UsageError) as empty:
        make_link("A", "a", data=" ")
    assert str(empty.value) == "--data is empty"
    with pytest.raises(UsageError) as dots:
        make_link("A", "..", journey=True)
    assert str(dots.value) == "JOURNEY must not be '..': it would name another URL path"


def test_linking_again_with_new_expressions_edits_the_table_in_place() -> None:
    welcome = 'automation = "welcome-flow"\n'
    when = Link(event="Signed Up", automation="welcome-flow", when='.properties.plan == "pro"', data=".")
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, when))
    assert (change, text) == (
        "updated",
        EXAMPLE.replace(welcome, welcome + 'when = \'.properties.plan == "pro"\'\ndata = "."\n'),
    )
    # The same link again changes nothing; without the expressions, the link is as it was.
    assert edited(text, lambda doc: add_link(doc, when)) == ("unchanged", text)
    plain = Link(event="Signed Up", automation="welcome-flow")
    assert edited(text, lambda doc: add_link(doc, plain)) == ("updated", EXAMPLE)


def test_a_journey_link_is_added_beside_an_automation_of_the_same_id_and_unlinked_by_kind() -> None:
    journey = Link(event="Signed Up", journey="welcome-flow")
    change, text = edited(EXAMPLE, lambda doc: add_link(doc, journey))
    assert (change, text) == (
        "added",
        EXAMPLE + '\n[[links]]\nevent = "Signed Up"\njourney = "welcome-flow"\n',
    )
    removed, after = edited(text, lambda doc: remove_links(doc, "Signed Up", "welcome-flow", kind="journey"))
    assert (removed, after) == (1, EXAMPLE)
    # Without a kind, the automation: as link links one.
    assert edited(text, lambda doc: remove_links(doc, "Signed Up", "welcome-flow")) == (
        1,
        EXAMPLE.replace('[[links]]\nevent = "Signed Up"\nautomation = "welcome-flow"\n\n', "")
        + '\n[[links]]\nevent = "Signed Up"\njourney = "welcome-flow"\n',
    )
    assert edited(text, lambda doc: remove_links(doc, "Signed Up", None))[0] == 2


def test_inline_links_take_expressions_inline() -> None:
    text = 'links = [{ event = "A", automation = "a" }]\n'
    link = Link(event="A", automation="a", when=".n > 1")
    assert edited(text, lambda doc: add_link(doc, link)) == (
        "updated",
        'links = [{ event = "A", automation = "a", when = ".n > 1" }]\n',
    )
