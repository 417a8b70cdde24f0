"""segroute.toml: the event -> automation links and the settings, loaded strictly, and edited in place
(comments and layout kept) and saved atomically."""

from __future__ import annotations

import codecs
import ipaddress
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segroute.errors import AuthError, ConfigError, UsageError

# tomlkit (40 ms to import) loads only in the commands that edit the file.
if TYPE_CHECKING:
    from tomlkit import TOMLDocument
    from tomlkit.items import AoT, InlineTable, Item, Table

__all__ = [
    "API_KEY_ENVS",
    "BASE_URL_ENV",
    "CONFIG_ENV",
    "DEFAULT_API_URL",
    "DEFAULT_CONFIG",
    "DEFAULT_PORTS",
    "EXPRESSION_KEYS",
    "LOOPBACK_HOSTS",
    "MAX_KEY_LIFETIME",
    "MIN_KEY_LIFETIME",
    "REGION_URLS",
    "Config",
    "ConfigFile",
    "Link",
    "add_link",
    "check_api_url",
    "check_template",
    "config_document",
    "config_path",
    "config_text",
    "is_loopback",
    "load_config",
    "make_link",
    "parse_key_lifetime",
    "remove_links",
    "resolve_api_key",
    "resolve_api_url",
    "save_config",
    "validate_config",
]

DEFAULT_CONFIG = "segroute.toml"
CONFIG_ENV = "SEGROUTE_CONFIG"
DEFAULT_API_URL = "https://api.courier.com"
REGION_URLS = {"us": DEFAULT_API_URL, "eu": "https://api.eu.courier.com"}
"""Courier's regions and their API base URLs."""
EXPRESSION_KEYS = ("when", "data", "recipient", "profile")
"""A link's jq expressions."""
MIN_KEY_LIFETIME, MAX_KEY_LIFETIME = 24 * 3600, 365 * 86400
"""Courier keeps an Idempotency-Key at least 24 hours, and at most a year when asked."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hdw])")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}
BASE_URL_ENV = "COURIER_BASE_URL"
API_KEY_ENVS = ("COURIER_API_KEY", "COURIER_AUTH_TOKEN")
LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class Link(BaseModel):
    """One Segment track event name -> one Courier automation or journey, with an optional condition
    and mappings, each a jq expression."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event: str = Field(min_length=1)
    """The track event's name, matched exactly."""
    automation: str | None = Field(default=None, min_length=1)
    """The automation template's ID or alias ..."""
    journey: str | None = Field(default=None, min_length=1)
    """... or the journey's: exactly one of the two."""
    brand: str | None = Field(default=None, min_length=1)
    """The brand the automation runs with; none by default, as Courier's Segment integration does."""
    when: str | None = Field(default=None, min_length=1)
    """The link fires for an event when this gives true (jq: not false or null)."""
    data: str | None = Field(default=None, min_length=1)
    """What becomes the body's ``data``, an object; the whole event by default."""
    recipient: str | None = Field(default=None, min_length=1)
    """Who the request is for; the event's ``userId`` by default."""
    profile: str | None = Field(default=None, min_length=1)
    """A profile, an object, that Courier merges into the stored one; none by default."""

    @field_validator("automation", "journey")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator(*EXPRESSION_KEYS)
    @classmethod
    def _check_expression(cls, value: str | None) -> str | None:
        if value is not None:
            from segroute.expressions import check_expression

            check_expression(value)  # ValueError, in jq's words, for one that does not compile
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Link:
        if self.automation is None and self.journey is None:
            raise ValueError("names no automation or journey: give one of the two")
        if self.automation is not None and self.journey is not None:
            raise ValueError("names an automation and a journey: give one of the two")
        if self.brand is not None and self.journey is not None:
            raise ValueError("brand is for automations: a journey invoke carries none")
        if self.mapped:
            from segroute.expressions import Expressions

            Expressions(self.expressions)  # as the router will run them
        return self

    @property
    def kind(self) -> Literal["automation", "journey"]:
        """What the link invokes."""
        return "automation" if self.automation is not None else "journey"

    @property
    def template(self) -> str:
        """The automation's or the journey's ID or alias."""
        return self.automation or self.journey or ""

    @property
    def label(self) -> str:
        """How views name what the link invokes: ``automation welcome-flow``."""
        return f"{self.kind} {self.template}"

    @property
    def expressions(self) -> dict[str, str]:
        """The link's jq expressions by key: ``when``, ``data``, ``recipient``, ``profile``."""
        return {key: text for key in EXPRESSION_KEYS if (text := getattr(self, key)) is not None}

    @property
    def mapped(self) -> bool:
        """Whether the link has a condition or a mapping."""
        return bool(self.expressions)


class Config(BaseModel):
    """The whole of segroute.toml."""

    model_config = ConfigDict(extra="forbid", strict=True)

    api_url: str | None = None
    """Courier's API base URL; ``--api-url`` and COURIER_BASE_URL come first."""
    update_profiles: bool = True
    """Whether identify events merge their traits into the Courier profile."""
    links: list[Link] = Field(default_factory=list)

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_api_url(value)

    def links_by_event(self) -> dict[str, tuple[Link, ...]]:
        """The links grouped by event name, in the order the file lists them."""
        grouped: dict[str, list[Link]] = {}
        for link in self.links:
            grouped.setdefault(link.event, []).append(link)
        return {event: tuple(links) for event, links in grouped.items()}


def check_template(value: str) -> str:
    """An automation's or a journey's ID or alias as given; ValueError for ``.`` and ``..``, which in
    the request path servers and proxies would resolve as a step along it, to another endpoint."""
    if value in (".", ".."):
        raise ValueError(f"must not be {value!r}: it would name another URL path")
    return value


def check_api_url(value: str) -> str:
    """An http(s) base URL in one spelling: scheme and host lower-cased, the scheme's default port
    dropped, no trailing slash; ValueError otherwise. The ledger keys its entries on this spelling,
    so ``http://LOCALHOST:80/`` and ``http://localhost`` are one API."""
    text = value.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
    if not parts.hostname:
        raise ValueError(f"names no host: {value!r}")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"must not have a query or a fragment: {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold a user name or password: the API key goes in COURIER_API_KEY")
    if any(char.isspace() for char in text):
        raise ValueError(f"must not contain spaces: {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"has a port that is not a number from 0 to 65535: {value!r}") from None
    host = parts.hostname  # lower-cased, an IPv6 address without its brackets
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path}".rstrip("/")


@dataclass(frozen=True)
class ConfigFile:
    """A config as loaded: where it lives, its raw TOML table, the validated model, and its text."""

    path: Path
    exists: bool
    raw: dict[str, Any]
    config: Config
    text: str = ""
    """The file as read (without a byte-order mark), which an edit starts from; empty if missing."""


def config_path(option: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """Which config file, and whether the user named it: ``-c``, SEGROUTE_CONFIG, else ./segroute.toml."""
    if option:
        return Path(option), True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), True
    return Path(DEFAULT_CONFIG), False


def load_config(path: Path, *, must_exist: bool) -> ConfigFile:
    """Read and validate a config file; a missing file is an empty config unless it must exist."""
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        if must_exist:
            raise ConfigError(f"{path}: no such config file") from exc
        return ConfigFile(path, False, {}, Config())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        decoded = text.decode("utf-8-sig")
        raw = tomllib.loads(decoded)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return ConfigFile(path, True, raw, validate_config(raw, path), decoded)


def validate_config(raw: dict[str, Any], path: Path) -> Config:
    """The model for a raw TOML table; `ConfigError` lists every bad key by its path."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_key_path(error['loc'], raw)}: {_describe(error)}" for error in exc.errors()]
        raise ConfigError(f"{path}: invalid config:\n" + "\n".join(f"  - {p}" for p in problems)) from exc
    seen: dict[tuple[str, str, str], int] = {}
    for index, link in enumerate(config.links):
        first = seen.setdefault((link.event, link.kind, link.template), index)
        if first != index:
            raise ConfigError(
                f"{path}: invalid config:\n  - links[{index}]: repeats links[{first}] "
                f"({link.event!r} -> {link.kind} {link.template!r})"
            )
    return config


def _key_path(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """``links[2].when``, with the link's event after its index when it has one: ``links[2] (event
    'Order Completed').when``."""
    out = ""
    for depth, part in enumerate(loc):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        if depth == 1 and loc[0] == "links" and isinstance(part, int):
            out += _link_event(raw, part)
    return out or "(top level)"


def _link_event(raw: Mapping[str, Any], index: int) -> str:
    links: Any = raw.get("links")
    try:
        event = links[index].get("event")
    except (AttributeError, IndexError, KeyError, TypeError):
        return ""
    return f" (event {event!r})" if isinstance(event, str) and event else ""


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind.endswith("_type"):
        return f"{error['msg'].lower()}, got {type(error['input']).__name__} {error['input']!r}"
    if kind == "value_error":  # a validator's ValueError: its own words, without pydantic's prefix
        return str(error["ctx"]["error"])
    return str(error["msg"])


def config_document(loaded: ConfigFile) -> TOMLDocument:
    """The config as a tomlkit document to edit in place: its comments, key order and layout survive."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(loaded.text)
    except TOMLKitError as exc:  # tomllib has read the text: only a tomlkit bug would get here
        raise ConfigError(f"{loaded.path}: cannot edit this TOML: {exc}") from exc


def config_text(path: Path, document: Mapping[str, Any]) -> str:
    """What saving ``document`` writes: its TOML (without blank lines at the end), checked by reading
    it back as `load_config` does; `ConfigError` if that fails."""
    import tomlkit

    text = _BLANK_LINES_AT_END.sub("\n", tomlkit.dumps(document))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: the edited config would not be valid TOML: {exc}") from exc
    validate_config(raw, path)
    return text


_BLANK_LINES_AT_END = re.compile(r"\n[ \t\r\n]*\Z")


def save_config(path: Path, document: Mapping[str, Any]) -> None:
    """Check, then write atomically: a temp file beside the config, fsync'd, renamed over it. A document
    from `config_document` keeps the file's comments and layout; the file keeps its mode and its
    byte-order mark, if it had one."""
    data = config_text(path, document).encode()
    target = Path(os.path.realpath(path))  # a symlinked config stays a symlink; its target is rewritten
    folder = target.parent
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    if _starts_with_bom(target):
        data = codecs.BOM_UTF8 + data
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
        _fsync_folder(folder)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _starts_with_bom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    except OSError:  # missing, or unreadable: then writing it will say so
        return False


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_link(event: str, template: str, *, journey: bool = False, **options: str | None) -> Link:
    """A valid link from the command line's words (``options``: brand, when, data, recipient,
    profile); `UsageError` names what is wrong, by its flag."""
    what = "JOURNEY" if journey else "AUTOMATION"
    words = {"EVENT": event, what: template} | {f"--{key}": value for key, value in options.items()}
    for name, value in words.items():
        if value is not None and not value.strip():
            raise UsageError(f"{name} is empty")
    try:
        check_template(template)
    except ValueError as exc:
        raise UsageError(f"{what} {exc}") from None
    if journey and options.get("brand") is not None:
        raise UsageError("--brand is for automations: a journey invoke carries none")
    for key in EXPRESSION_KEYS:
        if options.get(key) is not None:
            from segroute.expressions import check_expression

            try:
                check_expression(options[key] or "")
            except ValueError as exc:
                raise UsageError(f"--{key}: {exc}") from None
    return Link(event=event, **{"journey" if journey else "automation": template}, **options)


_OPTIONAL_KEYS = ("brand", *EXPRESSION_KEYS)
"""A link's keys besides its event and what it invokes, in the order a new link lists them."""


def _same_target(entry: Mapping[str, Any], event: str, kind: str, template: str | None) -> bool:
    """Whether a config entry is a link of ``event`` to the automation or journey (``kind``)
    ``template``, or to anything, when ``template`` is None."""
    return entry.get("event") == event and (template is None or entry.get(kind) == template)


def add_link(document: MutableMapping[str, Any], link: Link) -> str:
    """Add a link to a config table (plain, or a tomlkit document edited in place); returns ``added``,
    ``unchanged`` or ``updated``. A link of the same event to the same automation or journey is
    updated to be the new one: its brand, condition and mappings are the new link's, keys the new
    link lacks removed. A new link is written as the others are: a ``[[links]]`` table (also when
    there are none), or an inline table in a ``links = [...]`` array."""
    fields = {key: _toml_string(value) for key, value in link.model_dump(exclude_none=True).items()}
    links = document.get("links")
    if not links:
        document["links"] = [fields]  # tomlkit writes a list of tables as [[links]]
        return "added"
    for index, entry in enumerate(links):
        if _same_target(entry, link.event, link.kind, link.template):
            options = {key: fields.get(key) for key in _OPTIONAL_KEYS}
            if all(entry.get(key) == value for key, value in options.items()):
                return "unchanged"
            _set_options(links, index, options)
            return "updated"
    links.append(_new_entry(links, fields))
    return "added"


def _toml_string(value: str) -> str:
    """A string as a new TOML value: a literal one (``'...'``) when it holds a double quote and no
    single quote or control character, so that a jq expression reads as typed; else a basic one."""
    import tomlkit

    literal = '"' in value and "'" not in value and value.isprintable()
    return tomlkit.string(value, literal=literal)


def remove_links(
    document: MutableMapping[str, Any], event: str, template: str | None, *, kind: str = "automation"
) -> int:
    """Remove the event's link to one automation (or, of ``kind`` journey, one journey), or all of
    the event's links; returns how many. A ``[[links]]`` table goes with its header, its keys and the
    comments among them; comments after its last key stay, as they lead to what follows."""
    from tomlkit.items import AoT

    links = document.get("links") or []
    found = [index for index, entry in enumerate(links) if _same_target(entry, event, kind, template)]
    for index in reversed(found):
        if isinstance(links, AoT):
            _remove_table(document, links, index)
        else:
            del links[index]
    return len(found)


def _new_entry(links: MutableSequence[Any], fields: dict[str, str]) -> Any:
    """A new link in the style of ``links``."""
    import tomlkit
    from tomlkit.items import AoT, Array

    if isinstance(links, AoT):
        table = tomlkit.table()
        for key, value in fields.items():
            table.add(key, value)
        table.trivia.indent = _separator(links)
        return table
    if isinstance(links, Array):
        return _inline_table(fields, padded=_padded(links[-1]))
    return fields


def _separator(tables: AoT) -> str:
    """What goes before a new ``[[links]]`` header: a blank line, as between the last two tables, unless
    they are packed together or the file already ends with one."""
    from tomlkit.items import Whitespace

    last = tables[-1].as_string()
    line_break = "" if last.endswith("\n") else "\n"  # the file ended without one
    between = _after_last_key(tables[-2]) if len(tables) > 1 else []
    packed = len(tables) > 1 and not any(isinstance(item, Whitespace) for item in between)
    if packed or _BLANK_LINE_AT_END.search(last):
        return line_break
    return line_break + "\n"


_BLANK_LINE_AT_END = re.compile(r"\n[ \t]*\n\Z")


def _after_last_key(table: Table) -> list[Item]:
    """The comments and blank lines between a table's last key and the next table's header."""
    body = table.value.body
    last_key = max(i for i, (key, _) in enumerate(body) if key is not None)
    return [item for _, item in body[last_key + 1 :]]


def _inline_table(fields: Mapping[str, str], *, padded: bool) -> InlineTable:
    """``{event = "A", automation = "a"}``, or ``{ ... }`` when ``padded``."""
    import tomlkit

    table = tomlkit.inline_table()
    if padded:
        table.append(None, tomlkit.ws(" "))
    for key, value in fields.items():
        table.append(key, value)
    if padded:
        table.append(None, tomlkit.ws(" "))
    return table


def _padded(entry: InlineTable) -> bool:
    return entry.as_string().startswith("{ ")


def _set_options(links: MutableSequence[Any], index: int, options: Mapping[str, str | None]) -> None:
    """Set one link's optional keys in place: a value replaces the key's, None takes the key away."""
    from tomlkit.items import AoT, Array

    entry = links[index]
    if isinstance(links, Array):
        # The inline table is written again: tomlkit's key edits in one leave stray spaces.
        fields = {key: value for key, value in entry.unwrap().items() if key not in options}
        added = {key: value for key, value in options.items() if value is not None}
        links[index] = _inline_table(fields | added, padded=_padded(entry))
        return
    new = {}
    for key, value in options.items():
        if value is None:
            entry.pop(key, None)
        elif key in entry:
            entry[key] = value
        else:
            new[key] = value
    if new and isinstance(links, AoT):
        del links[index]  # older tomlkit cannot assign a table of an array of tables
        links.insert(index, _with_keys(entry, new))
    else:
        entry.update(new)


def _with_keys(table: Table, keys: Mapping[str, str]) -> Table:
    """The table with keys added after its last key, not after the comments and blank lines that end
    it (tomlkit's own append goes after those, which lead to the next table)."""
    import tomlkit

    body = table.value.body
    last_key = max(i for i, (name, _) in enumerate(body) if name is not None)
    copy = tomlkit.table()
    for name, item in body[: last_key + 1]:
        copy.append(name, item)
    for key, value in keys.items():
        copy.append(key, value)
    for name, item in body[last_key + 1 :]:
        copy.append(name, item)
    for field in ("indent", "comment_ws", "comment", "trail"):  # the [[links]] line
        setattr(copy.trivia, field, getattr(table.trivia, field))
    return copy


def _remove_table(document: MutableMapping[str, Any], tables: AoT, index: int) -> None:
    """Remove a ``[[links]]`` table, keeping the comments after its last key: above the next table's
    header, else after the table before it, else at the end of the file."""
    from tomlkit.container import Container
    from tomlkit.items import Comment

    tail = _after_last_key(tables[index])
    first_comment = next((i for i, item in enumerate(tail) if isinstance(item, Comment)), len(tail))
    kept = tail[first_comment:]
    del tables[index]
    if index < len(tables):
        following = tables[index]
        following.trivia.indent = "".join(item.as_string() for item in kept) + following.trivia.indent
        return
    if tables:
        for item in kept:
            tables[-1].value.append(None, item)
        return
    # tomlkit would write an empty array of tables as "links = []" above the other keys.
    assert isinstance(document, Container)
    del document["links"]
    for item in kept:
        document.append(None, item)


def resolve_api_url(
    option: str | None, environ: Mapping[str, str], config: Config, *, source: str = "the API URL given"
) -> str:
    """The base URL: ``option`` (a bad one is named as ``source``), then COURIER_BASE_URL, then the
    config, then Courier's default."""
    for named, value in ((source, option), (BASE_URL_ENV, environ.get(BASE_URL_ENV))):
        if value:
            try:
                return check_api_url(value)
            except ValueError as exc:
                raise ConfigError(f"{named}: {exc}") from exc
    return config.api_url or DEFAULT_API_URL


def parse_key_lifetime(text: str) -> float:
    """How long Courier should keep each Idempotency-Key: ``36h``, ``30d`` or ``8w`` as seconds, from
    24 hours to 365 days; ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError("give hours, days or weeks, e.g. 36h, 30d or 8w")
    seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    if not MIN_KEY_LIFETIME <= seconds <= MAX_KEY_LIFETIME:
        raise ValueError("Courier keeps keys from 24 hours to 365 days")
    return seconds


def resolve_api_key(environ: Mapping[str, str], base_url: str) -> str:
    """The API key from COURIER_API_KEY, else COURIER_AUTH_TOKEN; refused over plain http to a remote host."""
    key = next((environ[name].strip() for name in API_KEY_ENVS if environ.get(name, "").strip()), None)
    if key is None:
        raise AuthError(
            f"no API key: set {API_KEY_ENVS[0]} (or {API_KEY_ENVS[1]}), or add --dry-run to see the requests "
            "without sending them"
        )
    if not all(33 <= ord(char) < 127 for char in key):
        raise AuthError("the API key holds characters an HTTP header cannot carry: check how it was set")
    if base_url.startswith("http://") and not is_loopback(base_url):
        raise AuthError(f"refusing to send the API key over plain http to {base_url}: use https")
    return key


def is_loopback(url: str) -> bool:
    """Whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
