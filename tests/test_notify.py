"""Alerts outward: webhook POSTs to a local HTTP server and commands, off the training thread."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from probes.monitor import Monitor
from probes.notify import AlertNotifier, webhook_payload
from probes.transport import InProcessTransport


class Hook:
    """A local incoming-webhook endpoint on 127.0.0.1 that records every JSON body; with
    ``hold`` set, each request waits until the test releases it."""

    def __init__(self, hold: bool = False) -> None:
        self.bodies: list[dict] = []
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.entered.set()
                hook.release.wait(10)
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def test_submit_returns_while_the_post_is_still_in_flight():
    """The request is held open by the server until after submit() returned: had delivery
    run on the caller's thread, submit() could not have returned (the test would hang)."""
    held = Hook(hold=True)
    notifier = AlertNotifier(webhook=held.url)
    try:
        notifier.submit("r", 3, {"metric": "r", "value": 2.0, "limit": 1.0, "message": "too far"})
        assert held.entered.wait(10), "the POST never arrived"
        assert held.bodies == []  # still being handled, yet submit() is done
        held.release.set()
        notifier.close()
        assert held.bodies == [{"text": "edgewatch · r · step 3: too far (r = 2, limit 1)"}]
    finally:
        held.close()


def test_rate_limit_holds_back_and_reports_the_count(hook):
    notifier = AlertNotifier(webhook=hook.url, burst=2, interval=3600)
    for step in range(5):
        notifier.submit("r", step, {"message": f"alert {step}"})
    notifier.close()
    texts = [b["text"] for b in hook.bodies]
    assert texts[:2] == ["edgewatch · r · step 0: alert 0", "edgewatch · r · step 1: alert 1"]
    assert texts[2:] == ["edgewatch · r: 3 more alert(s) held back by the rate limit"]
    assert (notifier.sent, notifier.held_back) == (3, 3)


def test_a_monitor_alert_reaches_the_webhook_from_the_io_path(hook):
    """A non-finite loss raises the Monitor's alert; the notifier posts it."""
    mon = Monitor(
        "hooked", transport=InProcessTransport(), probes=None, notify=AlertNotifier(hook.url)
    )
    mon.observe(0, loss=torch.tensor(float("nan")))
    mon.close()
    assert hook.bodies == [{"text": "edgewatch · hooked · step 0: loss is not finite (loss = nan)"}]


def test_environment_configures_command_and_webhook(tmp_path, hook, monkeypatch):
    out = tmp_path / "alerts.txt"
    script = (
        "import os, sys, json; data = json.load(sys.stdin); "
        f"open({str(out)!r}, 'a').write(os.environ['EDGEWATCH_ALERT_METRIC'] + ' ' "
        "+ str(data['step']) + ' ' + sys.argv[-1] + '\\n')"
    )
    monkeypatch.setenv("EDGEWATCH_WEBHOOK", hook.url)
    monkeypatch.setenv("EDGEWATCH_ALERT_COMMAND", f'{sys.executable} -c "{script}"')
    mon = Monitor("env", transport=InProcessTransport(), probes=None)
    mon.observe(4, loss=float("inf"))
    mon.close()
    assert out.read_text() == "loss 4 edgewatch · env · step 4: loss is not finite (loss = inf)\n"
    assert len(hook.bodies) == 1


def test_discord_urls_get_content_and_others_text():
    assert webhook_payload("https://discord.com/api/webhooks/1/x", "hi") == {"content": "hi"}
    assert webhook_payload("https://hooks.slack.com/services/x", "hi") == {"text": "hi"}
    assert webhook_payload("http://127.0.0.1:9/x", "hi", style="discord") == {"content": "hi"}


def test_a_dead_endpoint_is_counted_and_its_secret_path_not_logged(caplog):
    notifier = AlertNotifier(webhook="http://127.0.0.1:9/hooks/SECRET", timeout=2)
    notifier.submit("r", 0, {"message": "x"})
    notifier.close()
    assert notifier.failed == 1 and notifier.sent == 0
    assert "SECRET" not in caplog.text


def test_a_webhook_that_is_not_http_is_refused_at_configuration():
    with pytest.raises(ValueError, match="http"):
        AlertNotifier(webhook="ftp://example.org/x")


def test_ew_alert_goes_out_too(hook):
    import edgewatch as ew

    ew.init(name="api", transport=InProcessTransport(), probes=None, notify=AlertNotifier(hook.url))
    ew.alert(title="diverged", text="loss is NaN", level="ERROR")
    ew.finish()
    assert hook.bodies == [{"text": "edgewatch · api · step 0: diverged: loss is NaN"}]
