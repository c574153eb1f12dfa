"""Alerts outward: POST to a chat webhook (Slack/Discord-compatible JSON) or run a command.

The training thread never waits for this: :meth:`AlertNotifier.submit` puts the alert on a
bounded queue (full: the alert is counted as dropped) and returns; a daemon worker thread of
its own does the HTTP request or the process, with a timeout. A run that hovers around a limit
must not flood a channel, so deliveries are rate-limited by a token bucket (``burst`` at once,
then one per ``interval`` seconds); alerts held back are counted and named in the next message,
and in a last one at close.

Configure with ``Monitor(notify=AlertNotifier(webhook=URL))``, or for any run (``diag run``
included) with the environment: ``EDGEWATCH_WEBHOOK=URL`` and/or
``EDGEWATCH_ALERT_COMMAND="notify-send edgewatch"``. The command gets the message as its last
argument, the alert as JSON on stdin, and ``EDGEWATCH_ALERT_{RUN,STEP,METRIC,VALUE,MESSAGE}``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("edgewatch")

WEBHOOK_ENV = "EDGEWATCH_WEBHOOK"
COMMAND_ENV = "EDGEWATCH_ALERT_COMMAND"
DISCORD_HOSTS = ("discord.com", "discordapp.com")


@dataclass(frozen=True)
class Alert:
    run: str
    step: int
    data: Mapping[str, Any]

    @property
    def message(self) -> str:
        data = self.data
        text = f"edgewatch · {self.run} · step {self.step}: {data.get('message', 'alert')}"
        value, limit = data.get("value"), data.get("limit")
        if data.get("metric") is not None and isinstance(value, (int, float)):
            text += f" ({data['metric']} = {value:.4g}"
            text += f", limit {limit:.4g})" if isinstance(limit, (int, float)) else ")"
        return text


def webhook_payload(url: str, text: str, style: str = "auto") -> dict[str, str]:
    """Slack (and Mattermost, Rocket.Chat…) read ``text``; Discord reads ``content``."""
    if style == "auto":
        host = (urlsplit(url).hostname or "").lower()
        style = "discord" if host.endswith(DISCORD_HOSTS) else "slack"
    return {"content": text[:2000]} if style == "discord" else {"text": text}


class AlertNotifier:
    """Delivers alerts to a webhook and/or a command on its own thread, rate-limited.

    Args:
        webhook: an incoming-webhook URL (http or https).
        command: a program and its arguments (a string is split like a shell would, but no
            shell runs it).
        style: ``auto`` (Discord URLs get ``{"content"}``, others ``{"text"}``), ``slack`` or
            ``discord``.
        burst: deliveries allowed at once (the token bucket's size).
        interval: seconds per further delivery (the bucket's refill).
        timeout: seconds for one request or command.
        max_queue: alerts waiting for the worker; beyond it they are counted as dropped.
    """

    def __init__(
        self,
        webhook: str | None = None,
        command: str | Sequence[str] | None = None,
        *,
        style: str = "auto",
        burst: int = 3,
        interval: float = 60.0,
        timeout: float = 10.0,
        max_queue: int = 100,
    ) -> None:
        if webhook is not None and urlsplit(webhook).scheme not in ("http", "https"):
            raise ValueError(f"webhook must be an http(s) URL, got {_redact(webhook)!r}")
        if style not in ("auto", "slack", "discord"):
            raise ValueError(f"style must be auto, slack or discord, got {style!r}")
        if burst < 1 or not interval > 0:
            raise ValueError("burst must be ≥ 1 and interval > 0")
        self.webhook, self.style, self.timeout = webhook, style, timeout
        self.command = shlex.split(command) if isinstance(command, str) else command
        self.burst, self.interval = burst, interval
        self.sent = self.held_back = self.dropped = self.failed = 0
        self._tokens, self._refilled = float(burst), time.monotonic()
        self._unreported = 0  # held back since the last delivered message
        self._queue: queue.Queue[Alert | None] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._work, name="edgewatch-alerts", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertNotifier | None:
        """A notifier from ``EDGEWATCH_WEBHOOK`` / ``EDGEWATCH_ALERT_COMMAND``, or None."""
        env = os.environ if env is None else env
        webhook, command = env.get(WEBHOOK_ENV) or None, env.get(COMMAND_ENV) or None
        return cls(webhook, command) if webhook or command else None

    def submit(self, run: str, step: int, data: Mapping[str, Any]) -> None:
        """Queue one alert; never blocks, never raises."""
        try:
            self._queue.put_nowait(Alert(run, step, dict(data)))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (and the count of held-back alerts), then stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # -- the worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        last: Alert | None = None
        while (alert := self._queue.get()) is not None:
            last = alert
            if self._take_token():
                self._deliver(alert, alert.message + self._held_back_note())
            else:
                self.held_back += 1
                self._unreported += 1
        if self._unreported and last is not None:
            held = f"{self._unreported} more alert(s) held back by the rate limit"
            text = f"edgewatch · {last.run}: {held}"
            self._deliver(last, text)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) / self.interval)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _held_back_note(self) -> str:
        note = f" (+{self._unreported} held back by the rate limit)" if self._unreported else ""
        self._unreported = 0
        return note

    def _deliver(self, alert: Alert, text: str) -> None:
        try:
            if self.webhook:
                self._post(text)
            if self.command:
                self._run(alert, text)
            self.sent += 1
        except Exception as exc:  # a dead endpoint must not kill the worker
            self.failed += 1
            if self.failed == 1:
                log.warning("edgewatch: alert delivery failed: %s", _redact(str(exc)))

    def _post(self, text: str) -> None:
        body = json.dumps(webhook_payload(self.webhook, text, self.style)).encode()
        request = urllib.request.Request(
            self.webhook, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read(1024)

    def _run(self, alert: Alert, text: str) -> None:
        value = alert.data.get("value")
        env = {
            **os.environ,
            "EDGEWATCH_ALERT_RUN": alert.run,
            "EDGEWATCH_ALERT_STEP": str(alert.step),
            "EDGEWATCH_ALERT_METRIC": str(alert.data.get("metric") or ""),
            "EDGEWATCH_ALERT_VALUE": "" if value is None else repr(value),
            "EDGEWATCH_ALERT_MESSAGE": text,
        }
        payload = json.dumps({"run": alert.run, "step": alert.step, **_json_safe(alert.data)})
        subprocess.run(
            [*self.command, text],
            input=payload.encode(),
            env=env,
            timeout=self.timeout,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """NaN/Inf as strings (JSON has neither), other non-JSON values as their repr."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        plain = isinstance(value, (str, int, float, bool, type(None)))
        if not plain or (isinstance(value, float) and not math.isfinite(value)):
            value = repr(value)
        out[str(key)] = value
    return out


def _redact(text: str) -> str:
    """Webhook URLs are secrets (their path is the token): never log one whole."""
    for part in text.split():
        if "://" in part:
            parsed = urlsplit(part.strip("'\"()<>,"))
            if parsed.path:
                text = text.replace(parsed.path, "/…")
    return text
