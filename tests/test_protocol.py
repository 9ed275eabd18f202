"""The live-stream protocol is defined once (service/protocol.py): the page, the clients and the
server's messages are held to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from service import protocol
from service.api.app import create_app
from service.client_common import StreamError
from service.client_stream import FINAL_CLOSE_CODES, hello_message, server_message

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "service" / "static" / "app.js").read_text()
BY_TYPE: dict[str, type[BaseModel]] = {
    model.model_fields["type"].default: model
    for model in (protocol.SessionHello, protocol.MaskHeader, protocol.ErrorMessage, protocol.ResetDone)
}


def page_blocks() -> dict[str, str]:
    """The page's handler body for each server message type it recognises (`message.type === "x"`)."""
    handler = PAGE[PAGE.index("function onMessage("):PAGE.index("function onClose(")]
    parts = re.split(r'message\.type === "(\w+)"', handler)
    return {kind: body for kind, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_the_page_reads_only_fields_the_protocol_defines() -> None:
    blocks = page_blocks()
    assert set(blocks) == {"session", "mask", "error"}
    for kind, body in blocks.items():
        fields = set(re.findall(r"\bmessage\.(\w+)", body)) - {"type"}
        assert fields <= set(BY_TYPE[kind].model_fields), (kind, fields)
    # The mask header is kept and read later, in onMask(header, ...).
    on_mask = PAGE[PAGE.index("function onMask("):]
    on_mask = on_mask[:on_mask.index("\n  }\n")]
    assert set(re.findall(r"\bheader\.(\w+)", on_mask)) <= set(protocol.MaskHeader.model_fields)


def test_the_page_and_the_clients_give_up_on_the_same_close_codes() -> None:
    refused = re.search(r"const REFUSED = new Set\(\[([\d, ]+)\]\)", PAGE)
    assert refused is not None
    assert {int(code) for code in refused.group(1).split(",")} == set(FINAL_CLOSE_CODES)
    assert protocol.POLICY in FINAL_CLOSE_CODES and protocol.GOING_AWAY not in FINAL_CLOSE_CODES


def test_client_messages_parse_by_type_and_refuse_the_unknown() -> None:
    assert isinstance(protocol.CLIENT_MESSAGE.validate_json('{"type":"reset"}'), protocol.ResetRequest)
    config = protocol.CLIENT_MESSAGE.validate_json('{"type":"config","format":"raw","threshold":0.5}')
    assert isinstance(config, protocol.StreamConfig) and config.threshold == 0.5
    for bad in ('{"type":"dance"}', '{"type":"config","threshold":2}', '{"type":"config","colour":"red"}', "[1]"):
        with pytest.raises(ValidationError):
            protocol.CLIENT_MESSAGE.validate_json(bad)


def test_server_messages_leave_out_only_what_is_unset() -> None:
    hello = protocol.SessionHello(session_id="cam", frame=3, model="m@1").text()
    assert '"restarted"' not in hello and '"temporal":true' in hello
    assert '"threshold":null' in protocol.StreamConfig().text()  # the ack says a threshold is off


def test_the_clients_parse_what_the_server_sends_and_raise_its_errors() -> None:
    hello = hello_message(protocol.SessionHello(session_id="cam", frame=3, model="m@1").text())
    assert hello.frame == 3
    with pytest.raises(StreamError, match="bad_session_id"):
        hello_message(protocol.ErrorMessage(code="bad_session_id", message="no").text())
    with pytest.raises(ConnectionError):  # a replica going away: try again
        hello_message(protocol.ErrorMessage(code="shutting_down", message="bye").text())
    header = server_message(protocol.MaskHeader(frame=1, width=4, height=2, latency_ms=1.0, dropped=0, format="raw",
                                                 temporal=True).text())
    assert isinstance(header, protocol.MaskHeader)
    with pytest.raises(StreamError, match="protocol"):
        server_message('{"type":"surprise"}')


def test_the_readme_lists_the_protocol_as_defined() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- protocol:start")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- protocol:end -->")].strip()
    assert table == protocol.markdown_table(), "regenerate the README's table with `python -m service.protocol`"


def test_the_api_description_carries_the_stream_messages() -> None:
    schemas = create_app().openapi()["components"]["schemas"]
    for model in protocol.MESSAGES:
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields), model.__name__
