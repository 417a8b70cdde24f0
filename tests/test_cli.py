"""The command line through typer's CliRunner: exit codes first, then the exact output."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from segroute import __version__
from segroute.cli import app
from tests.conftest import isolate
from tests.startup import run_fresh

runner = CliRunner()

NOT_SET = {"journey": None, "when": None, "data": None, "recipient": None, "profile": None}
"""A link's keys that `links -o json` gives as null when the link does not have them."""
TRACK = {
    "type": "track",
    "event": "Signed Up",
    "userId": "u1",
    "messageId": "m1",
    "properties": {"plan": "pro"},
}
# "sr1-" + sha256("m1\nPOST /automations/welcome-flow/invoke")[:32], the documented formula.
TRACK_KEY = "sr1-92f94c5035840c93ad8b6f68acce3ad8"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own folder, with none of the user's settings."""
    isolate(tmp_path, monkeypatch)


_LINES = b"".join(
    json.dumps({"type": "track", "n": n, "id": f"{n * 7919 % 100_003:x}"}).encode() + b"\n"
    for n in range(20_000)
)
TRUNCATED_GZIP = gzip.compress(_LINES)[: len(gzip.compress(_LINES)) // 2]


def invoke(*args: str, input: bytes | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def write_events(path: Path, *events: Any) -> Path:
    path.write_bytes(
        b"".join((e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events)
    )
    return path


def config_with_link(event: str = "Signed Up", automation: str = "welcome-flow") -> None:
    assert invoke("link", event, automation).exit_code == 0


def jsonl(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"segroute {__version__}\n"


# What reads, routes and sends events; `--help` and `links` need none of it, and start faster without.
PIPELINE_MODULES = ("segroute.sources", "segroute.pipeline", "segroute.runner", "segroute.ledger", "msgspec")


@pytest.mark.parametrize("args", [["--help"], ["links"], ["send", "--help"]])
def test_help_and_links_load_no_pipeline_module(args: list[str]) -> None:
    config_with_link()
    assert run_fresh(args, PIPELINE_MODULES)[:2] == (0, [])


@pytest.mark.parametrize(
    ("lines", "loads_rich"),
    [
        ([json.dumps(TRACK)], False),  # nothing to tell a person: rich (50 ms) is never loaded
        ([json.dumps(TRACK), "{broken"], True),  # a rejection is a line on stderr, through rich
    ],
)
def test_a_quiet_run_loads_rich_only_to_say_something(lines: list[str], loads_rich: bool) -> None:
    config_with_link()
    Path("events.jsonl").write_text("".join(line + "\n" for line in lines))
    args = ["send", "events.jsonl", "--dry-run", "-o", "jsonl", "-q", "--no-ledger"]
    code, loaded, stdout = run_fresh(args, ["rich"])
    assert (code, loaded) == (int(loads_rich), ["rich"] if loads_rich else [])
    assert stdout.count("\n") == 1


def test_dry_run_jsonl_is_the_exact_request() -> None:
    config_with_link()
    write_events(Path("events.jsonl"), TRACK)
    result = invoke("send", "events.jsonl", "--dry-run", "--output", "jsonl")
    assert result.exit_code == 0, result.stderr
    # The event's line goes into the body as it was read, spaces and all (json.dumps writes ", ").
    assert result.stdout == (
        '{"method":"POST","url":"https://api.courier.com/automations/welcome-flow/invoke",'
        f'"headers":{{"Idempotency-Key":"{TRACK_KEY}","Content-Type":"application/json"}},'
        '"body":{"brand":null,"data":{"type": "track", "event": "Signed Up", "userId": "u1", '
        '"messageId": "m1", "properties": {"plan": "pro"}},"profile":null,"recipient":"u1"},'
        '"origin":"events.jsonl:1","messageId":"m1"}\n'
    )


def test_an_event_without_a_line_of_its_own_goes_out_as_compact_json() -> None:
    config_with_link()
    Path("events.json").write_text(json.dumps([TRACK], indent=2))
    result = invoke("send", "events.json", "--dry-run", "--output", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert (
        '"body":{"brand":null,"data":{"type":"track","event":"Signed Up","userId":"u1","messageId":"m1",'
        '"properties":{"plan":"pro"}},"profile":null,"recipient":"u1"}'
    ) in result.stdout


def test_dry_run_summary_goes_to_stderr() -> None:
    config_with_link()
    write_events(Path("events.jsonl"), TRACK, TRACK, {"type": "page", "userId": "u1"}, b"{broken")
    result = invoke("send", "events.jsonl", "--dry-run")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    lines = [line.rstrip() for line in result.stderr.splitlines()]
    assert lines == [
        "events.jsonl:4: rejected (invalid_json): not valid JSON: Expecting property name enclosed in double "
        "quotes (column 2)",
        "dry run: nothing was sent",
        # Piped (as here): the tables without rules or padding at the ends, a line a row.
        "outcome   reason        records",
        "planned                       1",
        "skipped   duplicate           1",
        "skipped   not_routed          1",
        "rejected  invalid_json        1",
        "read                          4",
        "target                   requests",
        "automation welcome-flow         1",
        "total                           1",
    ]


def test_dry_run_text_view() -> None:
    config_with_link()
    write_events(Path("events.jsonl"), TRACK)
    result = invoke("send", "events.jsonl", "--dry-run", "--output", "text", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.splitlines()[:5] == [
        "POST https://api.courier.com/automations/welcome-flow/invoke",
        f"Idempotency-Key: {TRACK_KEY}",
        "Content-Type: application/json",
        "# events.jsonl:1  messageId m1",
        "{",
    ]
    body = "\n".join(result.stdout.splitlines()[4:])
    assert json.loads(body) == {"brand": None, "data": TRACK, "profile": None, "recipient": "u1"}


def test_output_is_deterministic() -> None:
    config_with_link()
    write_events(
        Path("events.jsonl"),
        TRACK,
        dict(TRACK, messageId=None),
        {"type": "identify", "userId": "u", "traits": {"a": 1}},
    )
    first = invoke("send", "events.jsonl", "--dry-run", "-o", "jsonl")
    second = invoke("send", "events.jsonl", "--dry-run", "-o", "jsonl")
    assert first.exit_code == 0
    assert first.stdout == second.stdout
    assert len(first.stdout.splitlines()) == 3


def test_stdin_when_piped_and_dash() -> None:
    config_with_link()
    data = json.dumps(TRACK).encode() + b"\n"
    for args in ((), ("-",)):
        result = invoke("send", *args, "--dry-run", "-q", input=data)
        assert result.exit_code == 0
        assert jsonl(result)[0]["origin"] == "<stdin>:1"


def test_gzip_and_folder_inputs() -> None:
    config_with_link()
    Path("in").mkdir()
    Path("in/b.json.gz").write_bytes(gzip.compress(json.dumps(dict(TRACK, messageId="m2")).encode()))
    write_events(Path("in/a.jsonl"), TRACK)
    result = invoke("send", "in", "--dry-run", "-q")
    assert result.exit_code == 0
    assert [(r["origin"], r["messageId"]) for r in jsonl(result)] == [
        ("in/a.jsonl:1", "m1"),
        ("in/b.json.gz:1", "m2"),
    ]


def test_api_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("segroute.toml").write_text(
        'api_url = "https://config.example"\n[[links]]\nevent = "Signed Up"\nautomation = "w"\n'
    )
    write_events(Path("e.jsonl"), TRACK)

    def url(*args: str) -> str:
        result = invoke("send", "e.jsonl", "--dry-run", "-q", *args)
        assert result.exit_code == 0, result.stderr
        return str(jsonl(result)[0]["url"])

    assert url() == "https://config.example/automations/w/invoke"
    monkeypatch.setenv("COURIER_BASE_URL", "https://env.example/")
    assert url() == "https://env.example/automations/w/invoke"
    assert url("--api-url", "http://127.0.0.1:9") == "http://127.0.0.1:9/automations/w/invoke"


def test_config_from_env_and_option(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("a.toml").write_text('[[links]]\nevent = "Signed Up"\nautomation = "from-a"\n')
    Path("b.toml").write_text('[[links]]\nevent = "Signed Up"\nautomation = "from-b"\n')
    write_events(Path("e.jsonl"), TRACK)
    monkeypatch.setenv("SEGROUTE_CONFIG", "a.toml")
    assert "from-a" in invoke("send", "e.jsonl", "--dry-run", "-q").stdout
    assert "from-b" in invoke("send", "e.jsonl", "--dry-run", "-q", "-c", "b.toml").stdout


def test_no_config_here_is_a_note_and_tracks_are_unlinked() -> None:
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert (
        result.stderr.splitlines()[0] == "note: no segroute.toml here, so no links: track events are skipped"
    )
    assert ["skipped", "unlinked", "1"] in [line.split() for line in result.stderr.splitlines()]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"type":"track","event":"A","userId":"caf\xe9"}\n',
            "bad.json:1: rejected (invalid_utf8): not valid UTF-8 (byte 42)",
        ),
        (
            b"[1, 2",
            "bad.json:1: rejected (invalid_json): not valid JSON: expected ',' or ']' after array item 1, "
            "found the end of the file; the rest of the file is not read",
        ),
        (
            TRUNCATED_GZIP,
            "rejected (unreadable): truncated gzip stream: the file ends before the compressed data does",
        ),
        (
            b'{"type":"track","p":"' + b"x" * 10_000_000 + b'"}\n',
            "bad.json:1: rejected (too_large): line longer than 1024 KiB; not read",
        ),
        (
            b'{"type":"track","event":"A","userId":"u","p":"' + b"x" * 40_000 + b'"}\n',
            "bad.json:1: rejected (too_large): 40048 bytes as compact JSON, over Segment's 32768-byte limit",
        ),
        (b'{"event":"A","userId":"u"}\n', "bad.json:1: rejected (missing_type): no 'type'"),
        (b'{"type":"tack","userId":"u"}\n', "bad.json:1: rejected (unknown_type): unknown type 'tack'"),
        (
            b'{"type":"track","userId":"u"}\n',
            "bad.json:1: rejected (missing_event): track event without an 'event' name",
        ),
        (
            b'{"type":"track","event":"A"}\n',
            "bad.json:1: rejected (missing_user): neither 'userId' nor 'anonymousId'",
        ),
        (b'"just a string"\n', "bad.json:1: rejected (not_object): not a JSON object but a string"),
        (
            b'{"type":"track","event":"Signed Up","userId":"u","n":' + b"9" * 5000 + b"}\n",
            "bad.json:1: rejected (too_large): holds an integer of 5,000 digits; segroute reads integers "
            "of up to 4,300 digits",
        ),
        (
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
            "bad.json: rejected (binary): not Segment events (binary: PNG image); not read",
        ),
    ],
)
def test_bad_input_gets_a_clear_line_and_exit_1(content: bytes, message: str) -> None:
    Path("bad.json").write_bytes(content)
    write_events(Path("good.json"), TRACK)
    config_with_link()
    result = invoke("send", "bad.json", "good.json", "--dry-run")
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert jsonl(result)[-1]["origin"] == "good.json:1"


def test_empty_file_is_a_note_and_a_run_that_reads_nothing_fails_unless_allowed() -> None:
    Path("empty.json").write_bytes(b"")
    result = invoke("send", "empty.json", "--dry-run")
    assert result.exit_code == 1
    assert "empty.json: note: empty: holds no events" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "warning: no records read from empty.json: nothing to send. An empty folder may be an unfinished "
        "copy; pass --allow-empty when an empty input is expected"
    )
    allowed = invoke("send", "empty.json", "--dry-run", "--allow-empty")
    assert allowed.exit_code == 0
    assert "warning" not in allowed.stderr


def test_missing_input_is_a_usage_error() -> None:
    result = invoke("send", "nope.jsonl", "--dry-run")
    assert result.exit_code == 2
    assert result.stderr == "error: nope.jsonl: no such file or directory\n"


def test_send_without_a_key_says_where_it_looked() -> None:
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no API key: set COURIER_API_KEY (or COURIER_AUTH_TOKEN), "
        "or add --dry-run to see the requests without sending them\n"
    )


def test_bad_config_names_the_key_and_exits_2() -> None:
    Path("segroute.toml").write_text('update_profile = true\n[[links]]\nevent = "A"\nautomaton = "x"\n')
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl", "--dry-run")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: segroute.toml: invalid config:\n"
        "  - links[0] (event 'A').automaton: unknown key\n"
        "  - update_profile: unknown key\n"
    )


def test_bad_api_url_is_a_usage_error() -> None:
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl", "--dry-run", "--api-url", "api.courier.com")
    assert result.exit_code == 2
    assert result.stderr == "error: --api-url: must be an http:// or https:// URL, not 'api.courier.com'\n"


def test_link_creates_the_config_and_linking_twice_changes_nothing() -> None:
    result = invoke("link", "Checkout Complete", "order-confirmation")
    assert result.exit_code == 0
    assert result.stderr == (
        "linked 'Checkout Complete' -> 'order-confirmation' in segroute.toml (created segroute.toml)\n"
    )
    before = Path("segroute.toml").read_bytes()
    again = invoke("link", "Checkout Complete", "order-confirmation")
    assert again.exit_code == 0
    assert again.stderr == "already linked: 'Checkout Complete' -> 'order-confirmation'; nothing changed\n"
    assert Path("segroute.toml").read_bytes() == before
    brand = invoke("link", "Checkout Complete", "order-confirmation", "--brand", "b1")
    assert brand.stderr == "updated the link 'Checkout Complete' -> 'order-confirmation' in segroute.toml\n"


def test_link_keeps_other_settings() -> None:
    Path("segroute.toml").write_text(
        '# comment\napi_url = "https://api.eu.courier.com"\nupdate_profiles = false\n'
    )
    assert invoke("link", "A", "b").exit_code == 0
    text = Path("segroute.toml").read_text()
    assert 'api_url = "https://api.eu.courier.com"' in text
    assert "update_profiles = false" in text


def test_link_help_says_comments_are_kept() -> None:
    result = invoke("link", "--help")
    assert result.exit_code == 0
    assert "its comments, layout and settings are kept" in " ".join(result.stdout.split())


def test_links_table_and_json() -> None:
    config_with_link("Signed Up", "welcome-flow")
    assert invoke("link", "Checkout Complete", "receipt", "--brand", "shop").exit_code == 0
    table = invoke("links")
    assert table.exit_code == 0
    # Piped (as here): tab-separated, a header and a line a link, for grep, cut and awk.
    assert table.stdout == (
        "event\tautomation\tbrand\nSigned Up\twelcome-flow\t\nCheckout Complete\treceipt\tshop\n"
    )
    as_json = invoke("links", "--output", "json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == [
        {"event": "Signed Up", "automation": "welcome-flow", "brand": None, **NOT_SET},
        {"event": "Checkout Complete", "automation": "receipt", "brand": "shop", **NOT_SET},
    ]


def test_links_and_inspect_without_config_say_there_is_none() -> None:
    result = invoke("links")
    assert result.exit_code == 0
    assert (
        result.stdout == f"no segroute.toml in {Path.cwd()}; create it with: segroute link EVENT AUTOMATION\n"
    )
    Path("segroute.toml").write_text("")
    empty = invoke("links")
    assert empty.stdout == "no links in segroute.toml; add one with: segroute link EVENT AUTOMATION\n"
    Path("segroute.toml").unlink()
    write_events(Path("e.jsonl"), TRACK)
    inspected = invoke("inspect", "e.jsonl")
    assert inspected.exit_code == 0
    assert inspected.stderr.startswith(
        "note: no segroute.toml here, so no links: every track event shows as unlinked\n"
    )


def test_unlink_one_all_and_none() -> None:
    config_with_link("A", "x")
    config_with_link("A", "y")
    config_with_link("B", "z")
    one = invoke("unlink", "A", "x")
    assert (one.exit_code, one.stderr) == (0, "unlinked 'A' -> 'x' in segroute.toml\n")
    none = invoke("unlink", "A", "x")
    assert (none.exit_code, none.stderr) == (0, "no link 'A' -> 'x' in segroute.toml; nothing changed\n")
    config_with_link("A", "x")
    every = invoke("unlink", "A")
    assert (every.exit_code, every.stderr) == (0, "unlinked 'A': its 2 links in segroute.toml\n")
    assert json.loads(invoke("links", "-o", "json").stdout) == [
        {"event": "B", "automation": "z", "brand": None, **NOT_SET}
    ]


def test_link_and_unlink_a_journey_beside_an_automation_of_the_same_id() -> None:
    journey = invoke("link", "A", "x", "--journey", "--when", '.properties.plan == "pro"')
    assert (journey.exit_code, journey.stderr) == (
        0,
        "linked 'A' -> journey 'x' in segroute.toml (created segroute.toml)\n",
    )
    assert Path("segroute.toml").read_text() == (
        '[[links]]\nevent = "A"\njourney = "x"\nwhen = \'.properties.plan == "pro"\'\n'
    )
    # The automation x is another link; unlink without --journey is about automations, as link is.
    wrong = invoke("unlink", "A", "x")
    assert (wrong.exit_code, wrong.stderr) == (
        0,
        "no link 'A' -> 'x' in segroute.toml (it links to the journey 'x': add --journey); nothing changed\n",
    )
    config_with_link("A", "x")
    automation = invoke("unlink", "A", "x")
    assert (automation.exit_code, automation.stderr) == (0, "unlinked 'A' -> 'x' in segroute.toml\n")
    again = invoke("unlink", "A", "x")
    assert again.stderr == (
        "no link 'A' -> 'x' in segroute.toml (it links to the journey 'x': add --journey); nothing changed\n"
    )
    gone = invoke("unlink", "A", "x", "--journey")
    assert (gone.exit_code, gone.stderr) == (0, "unlinked 'A' -> journey 'x' in segroute.toml\n")
    assert json.loads(invoke("links", "-o", "json").stdout) == []
    brand = invoke("link", "A", "x", "--journey", "--brand", "b")
    assert (brand.exit_code, brand.stderr) == (
        2,
        "error: --brand is for automations: a journey invoke carries none\n",
    )


def test_unlink_without_a_config_is_an_error() -> None:
    result = invoke("unlink", "A")
    assert result.exit_code == 2
    assert result.stderr == "error: segroute.toml: no such config file\n"


EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
SHIPPED = '\n[[links]]\nevent = "Order Shipped"\nautomation = "shipping-update"\n'


def test_link_and_unlink_keep_the_example_byte_for_byte() -> None:
    Path("segroute.toml").write_bytes(EXAMPLE.read_bytes())
    result = invoke("link", "Order Shipped", "shipping-update")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "linked 'Order Shipped' -> 'shipping-update' in segroute.toml\n"
    assert Path("segroute.toml").read_bytes() == EXAMPLE.read_bytes() + SHIPPED.encode()

    result = invoke("unlink", "Order Shipped")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "unlinked 'Order Shipped': its link in segroute.toml\n"
    assert Path("segroute.toml").read_bytes() == EXAMPLE.read_bytes()


def test_a_brand_change_edits_the_table_in_place() -> None:
    Path("segroute.toml").write_bytes(EXAMPLE.read_bytes())
    result = invoke("link", "Checkout Complete", "loyalty-points", "--brand", "points-brand")
    assert (result.exit_code, result.stderr) == (
        0,
        "updated the link 'Checkout Complete' -> 'loyalty-points' in segroute.toml\n",
    )
    expected = EXAMPLE.read_text().replace('"storefront-brand"', '"points-brand"')
    assert Path("segroute.toml").read_text() == expected


def test_link_dry_run_prints_the_diff_and_writes_nothing() -> None:
    Path("segroute.toml").write_bytes(EXAMPLE.read_bytes())
    result = invoke("link", "Order Shipped", "shipping-update", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        "--- segroute.toml\n"
        "+++ segroute.toml\n"
        "@@ -47,3 +47,7 @@\n"
        " [[links]]\n"
        ' event = "Password Reset Requested"\n'
        ' automation = "password-reset"\n'
        "+\n"
        "+[[links]]\n"
        '+event = "Order Shipped"\n'
        '+automation = "shipping-update"\n'
    )
    assert result.stderr == "dry run: nothing was written to segroute.toml\n"
    assert Path("segroute.toml").read_bytes() == EXAMPLE.read_bytes()
    assert sorted(path.name for path in Path.cwd().iterdir()) == ["segroute.toml"]


def test_link_dry_run_without_a_config_creates_none() -> None:
    result = invoke("link", "A", "a", "--brand", "b", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        "--- segroute.toml\n"
        "+++ segroute.toml\n"
        "@@ -0,0 +1,4 @@\n"
        "+[[links]]\n"
        '+event = "A"\n'
        '+automation = "a"\n'
        '+brand = "b"\n'
    )
    assert result.stderr == "dry run: nothing was written to segroute.toml\n"
    assert not Path("segroute.toml").exists()


def test_unlink_dry_run_prints_the_diff_and_writes_nothing() -> None:
    Path("segroute.toml").write_bytes(EXAMPLE.read_bytes())
    result = invoke("unlink", "Checkout Complete", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        "--- segroute.toml\n"
        "+++ segroute.toml\n"
        "@@ -36,14 +36,5 @@\n"
        ' automation = "welcome-flow"\n'
        " \n"
        " [[links]]\n"
        '-event = "Checkout Complete"\n'
        '-automation = "order-confirmation"\n'
        "-\n"
        "-[[links]]\n"
        '-event = "Checkout Complete"\n'
        '-automation = "loyalty-points"\n'
        '-brand = "storefront-brand"\n'
        "-\n"
        "-[[links]]\n"
        ' event = "Password Reset Requested"\n'
        ' automation = "password-reset"\n'
    )
    assert result.stderr == "dry run: nothing was written to segroute.toml\n"
    assert Path("segroute.toml").read_bytes() == EXAMPLE.read_bytes()


def test_a_dry_run_that_changes_nothing_says_so() -> None:
    Path("segroute.toml").write_bytes(EXAMPLE.read_bytes())
    linked = invoke("link", "Signed Up", "welcome-flow", "--dry-run")
    assert (linked.exit_code, linked.stdout) == (0, "")
    assert linked.stderr == "already linked: 'Signed Up' -> 'welcome-flow'; nothing changed\n"
    unlinked = invoke("unlink", "Nope", "--dry-run")
    assert (unlinked.exit_code, unlinked.stdout) == (0, "")
    assert unlinked.stderr == "no link 'Nope' in segroute.toml; nothing changed\n"
    assert Path("segroute.toml").read_bytes() == EXAMPLE.read_bytes()


def test_inline_links_stay_inline() -> None:
    Path("segroute.toml").write_text('links = [{ event = "A", automation = "a" }]  # mine\n')
    assert invoke("link", "B", "b").exit_code == 0
    text = 'links = [{ event = "A", automation = "a" }, { event = "B", automation = "b" }]  # mine\n'
    assert Path("segroute.toml").read_text() == text
    assert json.loads(invoke("links", "-o", "json").stdout) == [
        {"event": "A", "automation": "a", "brand": None, **NOT_SET},
        {"event": "B", "automation": "b", "brand": None, **NOT_SET},
    ]
    assert invoke("unlink", "A").exit_code == 0
    assert Path("segroute.toml").read_text() == 'links = [{ event = "B", automation = "b" }]  # mine\n'


@pytest.mark.parametrize(("args", "loaded"), [(["links"], []), (["link", "A", "a"], ["tomlkit"])])
def test_only_editing_the_config_loads_tomlkit(args: list[str], loaded: list[str]) -> None:
    config_with_link()
    assert run_fresh(args, ["tomlkit"])[:2] == (0, loaded)


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_a_closed_stdout_ends_the_run_quietly(fmt: str) -> None:
    """`segroute send ... | head -1`: no traceback, no 'Exception ignored' noise, exit 0."""
    config_with_link()
    write_events(Path("many.jsonl"), *(dict(TRACK, messageId=f"m{n}") for n in range(20_000)))
    command = [sys.executable, "-m", "segroute", "send", "many.jsonl", "--dry-run", "-o", fmt]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        errors = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert first.startswith(b'{"method":"POST"' if fmt == "jsonl" else b"POST https://api.courier.com/")
    assert errors == b""
    assert code == 0


def test_plain_progress_lines_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from segroute import render
    from tests.courier_server import API_KEY, FakeCourier

    monkeypatch.setattr(render, "PLAIN_PROGRESS_EVERY", 0.0)
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)
    config_with_link()
    server = FakeCourier()
    server.start()
    try:
        write_events(Path("e.jsonl"), {"type": "identify", "userId": "u", "traits": {"a": 1}})
        loud = invoke("send", "e.jsonl", "--api-url", server.url)
        quiet = invoke("send", "e.jsonl", "--api-url", server.url, "--quiet")
    finally:
        server.stop()
    assert loud.exit_code == 0
    assert "progress: read 1 events · 1 requests done" in loud.stderr
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


# --- inputs and environments that once broke segroute ---------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"type":"track","event":"Signed Up","userId":"u","s":"\\ud800"}]',
            "bad.json:1[0]: rejected (invalid_json): not valid JSON: no low surrogate in string",
        ),
        (  # an item of a batch has no text of its own to send as read: it must be written again
            b'{"batch":[{"type":"track","event":"Signed Up","userId":"u","messageId":"d","p":'
            + b"[" * 1000
            + b"]" * 1000
            + b"}]}",
            "bad.json:1[0]: rejected (too_deep): nested too deeply to write as JSON",
        ),
    ],
)
def test_values_orjson_refuses_are_rejected_not_a_traceback(content: bytes, message: str) -> None:
    config_with_link()
    Path("bad.json").write_bytes(content)
    result = invoke("send", "bad.json", "--dry-run")
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_event_too_deep_to_write_again_goes_out_as_its_line() -> None:
    config_with_link()
    event = b'{"type":"track","event":"Signed Up","userId":"u","messageId":"d","p":'
    line = event + b"[" * 1000 + b"]" * 1000 + b"}"
    Path("deep.jsonl").write_bytes(line + b"\n")
    result = invoke("send", "deep.jsonl", "--dry-run", "-o", "jsonl", "-q")
    assert result.exit_code == 0, result.stderr
    assert f'"body":{{"brand":null,"data":{line.decode()},"profile":null,"recipient":"u"}}' in result.stdout


def test_big_integers_go_out_exactly() -> None:
    config_with_link()
    Path("e.jsonl").write_text('{"type":"track","event":"Signed Up","userId":"u","n":18446744073709551616}\n')
    result = invoke("send", "e.jsonl", "--dry-run", "-q")
    assert result.exit_code == 0
    assert '"n":18446744073709551616' in result.stdout


def test_integers_of_4300_digits_go_out_exactly_and_longer_ones_are_rejected() -> None:
    config_with_link()
    longest, long = "9" * 4300, "9" * 5000
    line = '{"type":"track","event":"Signed Up","userId":%s,"n":%s}'  # noqa: UP031
    Path("e.jsonl").write_text(f"{line % (longest, longest)}\n{line % ('1', long)}\n{line % (long, '1')}\n")
    Path("e.json").write_text(f"[{line % (longest, '-' + '9' * 4299)}, {line % ('1', long)}]")
    result = invoke("send", "e.jsonl", "e.json", "--dry-run", "-o", "jsonl")
    assert result.exit_code == 1
    too_long = "holds an integer of 5,000 digits; segroute reads integers of up to 4,300 digits"
    assert result.stderr.splitlines()[:3] == [
        f"e.jsonl:2: rejected (too_large): {too_long}",
        f"e.jsonl:3: rejected (too_large): {too_long}",
        f"e.json:1[1]: rejected (too_large): {too_long}",
    ]
    requests = jsonl(result)
    assert [request["origin"] for request in requests] == ["e.jsonl:1", "e.json:1[0]"]
    assert [request["body"]["recipient"] for request in requests] == [longest, longest]
    assert requests[0]["body"]["data"]["n"] == int(longest)
    assert requests[1]["body"]["data"]["n"] == -int("9" * 4299)


def test_empty_link_words_are_usage_errors() -> None:
    for args, message in (
        (("link", "", "x"), "error: EVENT is empty\n"),
        (("link", "A", "x", "--brand", ""), "error: --brand is empty\n"),
    ):
        result = invoke(*args)
        assert (result.exit_code, result.stderr) == (2, message)
    config_with_link("A", "x")
    result = invoke("unlink", "A", "")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: AUTOMATION is empty")


def test_linking_an_automation_that_would_name_another_url_path_is_refused() -> None:
    result = invoke("link", "A", "..")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: AUTOMATION must not be '..': it would name another URL path\n"
    assert not Path("segroute.toml").exists()
    config_with_link("A", "x")
    before = Path("segroute.toml").read_bytes()
    result = invoke("link", "B", ".", "--brand", "b")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: AUTOMATION must not be '.': it would name another URL path\n",
    )
    assert Path("segroute.toml").read_bytes() == before


def test_a_user_id_that_would_name_another_url_path_is_rejected() -> None:
    config_with_link()
    write_events(
        Path("e.jsonl"),
        {"type": "identify", "userId": "..", "traits": {"plan": "pro"}},
        dict(TRACK, userId="."),
        TRACK,
    )
    result = invoke("send", "e.jsonl", "--dry-run", "-o", "jsonl", "-q")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        "e.jsonl:1: rejected (unsafe_id): userId '..' would name another URL path",
        "e.jsonl:2: rejected (unsafe_id): userId '.' would name another URL path",
    ]
    assert [request["origin"] for request in jsonl(result)] == ["e.jsonl:3"]


def test_square_brackets_in_names_are_shown_as_they_are() -> None:
    config_with_link("Order [v2] Completed", "[/x]")
    table = invoke("links")
    assert table.exit_code == 0
    assert "Order [v2] Completed\t[/x]\t\n" in table.stdout
    write_events(Path("e.jsonl"), dict(TRACK, event="Order [v2] Completed"))
    result = invoke("send", "e.jsonl", "--dry-run")
    assert result.exit_code == 0
    assert "automation [/x]" in result.stderr


def test_terminal_escapes_in_events_are_not_passed_to_the_terminal() -> None:
    config_with_link()
    write_events(Path("e.jsonl"), dict(TRACK, messageId="\u001b]0;pwned\u0007\u001b[31mRED"))
    result = invoke("send", "e.jsonl", "--dry-run", "-o", "text")
    assert "\u001b" not in result.stdout
    assert "messageId \\x1b]0;pwned\\x07\\x1b[31mRED" in result.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://api.courier.com/?x=1", "must not have a query or a fragment"),
        ("https://api.courier.com#top", "must not have a query or a fragment"),
        ("https://user:secret@api.courier.com", "must not hold a user name or password"),
        ("https://api.courier .com", "must not contain spaces"),
        ("ftp://api.courier.com", "must be an http:// or https:// URL"),
    ],
)
def test_bad_api_urls(url: str, message: str) -> None:
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl", "--dry-run", "--api-url", url)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "secret" not in result.stderr


def test_an_upper_case_scheme_and_host_are_lower_cased() -> None:
    config_with_link()
    write_events(Path("e.jsonl"), TRACK)
    result = invoke("send", "e.jsonl", "--dry-run", "-q", "--api-url", "HTTPS://EU.example:443/v1/")
    assert json.loads(result.stdout)["url"] == "https://eu.example/v1/automations/welcome-flow/invoke"


def test_closed_stdin_and_a_full_disk(tmp_path: Path) -> None:
    config_with_link()
    write_events(Path("e.jsonl"), TRACK)
    base = [sys.executable, "-m", "segroute", "send", "e.jsonl", "--dry-run", "-o", "jsonl", "-q"]
    closed = subprocess.run(
        base, cwd=tmp_path, capture_output=True, preexec_fn=lambda: os.close(0), check=False
    )
    assert (closed.returncode, closed.stderr) == (0, b"")
    assert closed.stdout.startswith(b'{"method":"POST"')
    with open("/dev/full", "wb") as full:
        done = subprocess.run(base, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, check=False)
    assert done.returncode == 1
    assert done.stderr == b"error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_dry_run_still_shows_the_counts(tmp_path: Path, signum: signal.Signals) -> None:
    config_with_link()
    command = [sys.executable, "-m", "segroute", "send", "-", "--dry-run", "-o", "jsonl"]
    with subprocess.Popen(
        command, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(TRACK).encode() + b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith(b'{"method":"POST"')
        proc.send_signal(signum)  # stdin is still open: segroute is waiting for more
        err = proc.stderr.read().decode()
        proc.wait(timeout=30)
    assert proc.returncode == (143 if signum == signal.SIGTERM else 130)
    assert ["planned", "1"] in [line.split() for line in err.splitlines()]
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert f"stopped by {how}: read 1 record (from stdin); the rest was not read." in err
    assert "To resume, pipe the same events into the same command again" in err
    assert "Traceback" not in err


def test_a_dry_run_report_and_failure_file() -> None:
    config_with_link()
    write_events(Path("e.jsonl"), TRACK, TRACK, dict(TRACK, event="Other", messageId="m2"), [1], b"{nope")
    result = invoke("send", "e.jsonl", "--dry-run", "-q", "--report", "r.json", "--failed", "f.jsonl")
    assert result.exit_code == 1
    report = json.loads(Path("r.json").read_text())
    assert report["mode"] == "dry-run"
    assert report["read"] == 5
    assert report["totals"] == {"planned": 1, "rejected": 2, "skipped": 2}
    assert report["outcomes"]["skipped"] == {"duplicate": 1, "unlinked": 1}
    assert set(report["skip_reasons"]) == {"duplicate", "unlinked"}
    assert report["targets"] == {"automation welcome-flow": {"planned": 1}}
    assert [p["origin"] for p in report["problems"]] == ["e.jsonl:4", "e.jsonl:5"]
    # Rejected records that are still JSON are kept for a replay; text that is not JSON cannot be.
    assert Path("f.jsonl").read_text() == "[1]\n"


# --- shell completion ------------------------------------------------------------------------------


def _on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH starts with a `segroute` that runs this checkout, as a shell's would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "segroute"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m segroute "$@"\n')
    launcher.chmod(0o755)
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": root}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("segroute se", ["send"]),
        ("segroute l", ["link", "links", "ledger"]),
        ("segroute send --ord", ["--order"]),
        ("segroute send --order ''", ["input", "timestamp"]),
        ("segroute completion ''", ["bash", "zsh", "fish"]),
    ],
)
def test_the_bash_completion_script_completes_commands_options_and_values_in_bash(
    tmp_path: Path, words: str, expected: list[str]
) -> None:
    env = _on_path(tmp_path)
    script = subprocess.run(
        ["segroute", "completion", "bash"], env=env, capture_output=True, check=True
    ).stdout.decode()
    assert "complete -o default -F _segroute_completion segroute" in script
    shell = (
        f'eval "$(segroute completion bash)"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); '
        '_segroute_completion segroute; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, check=True)
    assert sorted(done.stdout.decode().split()) == sorted(expected)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_zsh_and_fish_scripts_ask_segroute_what_comes_next_and_it_answers(
    tmp_path: Path, shell: str
) -> None:
    """No zsh or fish here to load them in: the scripts must call back with the variable segroute
    answers to, and its answer must name the commands."""
    env = _on_path(tmp_path)
    script = subprocess.run(["segroute", "completion", shell], env=env, capture_output=True, check=True)
    assert f"_SEGROUTE_COMPLETE=complete_{shell}" in script.stdout.decode()
    asked = {**env, "_SEGROUTE_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "segroute se"}
    if shell == "fish":
        asked["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    answer = subprocess.run(["segroute"], env=asked, capture_output=True, check=True).stdout.decode()
    assert "send" in answer


def test_completion_for_a_shell_it_does_not_know_is_a_usage_error() -> None:
    result = runner.invoke(app, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "tcsh" in result.stderr


# --- help -------------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["send"],
    ["inspect"],
    ["link"],
    ["unlink"],
    ["links"],
    ["completion"],
    ["ledger"],
    ["ledger", "export"],
    ["ledger", "unsettled"],
    ["ledger", "merge"],
]


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda words: " ".join(words) or "segroute")
def test_help_names_values_in_words_fits_the_terminal_and_shows_examples(
    command: list[str], columns: int
) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    text = result.stdout
    for python_type in ("<bool>", "<str>", "<int", "<float", "<list", "<path", "<text"):
        assert python_type not in text, (python_type, text)
    assert not re.search(r"\{\w+(\|\w+)+\}", text), text  # click's {a|b} choices: the metavars say them
    assert max(len(line) for line in text.splitlines()) <= columns
    assert "\n  Examples:\n\n" in text, text
    examples = text.split("\n  Examples:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 3 <= len(examples) <= 5 and all(line.startswith("    ") for line in examples), examples


def test_help_says_defaults_and_the_environment_variables_options_read() -> None:
    send = " ".join(runner.invoke(app, ["send", "--help"], env={"COLUMNS": "200"}).stdout.split())
    for shown in (
        "-c, --config FILE",
        "[default: $SEGROUTE_CONFIG, else ./segroute.toml]",
        "[default: $COURIER_BASE_URL, else the config, else https://api.courier.com]",
        "[default: $SEGROUTE_LEDGER, else segroute-ledger.sqlite3 beside the config]",
        "--concurrency N",
        "[default: 8; 1<=x<=512]",
        "--order input|timestamp",
        "--since TIME",
        "$COURIER_API_KEY",
        "Usage: segroute send [OPTIONS] [INPUT]...",
        "--fail-on unlinked",
    ):
        assert shown in send, shown
    merge = runner.invoke(app, ["ledger", "merge", "--help"]).stdout
    assert merge.startswith("Usage: segroute ledger merge [OPTIONS] OUTPUT INPUT...\n")


def test_listings_take_text_or_json_as_send_takes_text_or_jsonl_and_table_still_works() -> None:
    assert invoke("link", "Signed Up", "welcome-flow").exit_code == 0
    text, table = invoke("links", "-o", "text"), invoke("links", "-o", "table")
    assert (text.exit_code, table.exit_code) == (0, 0)
    assert text.stdout == table.stdout and "welcome-flow" in text.stdout
    assert json.loads(invoke("links", "-o", "json").stdout)[0]["automation"] == "welcome-flow"
    assert invoke("links", "-o", "jsonl").exit_code == 2


def test_segroute_alone_prints_its_help_and_succeeds() -> None:
    alone = runner.invoke(app, [])
    assert alone.exit_code == 0
    assert alone.stdout == runner.invoke(app, ["--help"]).stdout
