"""Who may watch a run and who may steer it: CurveZMQ keys, allow-lists, refusal rules.

A control socket that can pause, checkpoint or rescale the learning rate of a GPU job must not
be open to whoever reaches its port. Three rules, enforced where the sockets are made:

* **Loopback by default.** A run binds ``127.0.0.1`` (or ``ipc://``). Binding anything else
  without keys raises :class:`InsecureBindError` — its message names both fixes (keys from
  ``diag keys``, or an SSH tunnel) — unless the caller passes ``insecure=True``, which logs a
  warning and marks the run's meta record so the TUI header shows it.
* **CURVE with allow-lists.** With keys, PUB and ROUTER are CURVE servers; a ZAP handler (pyzmq's
  ``ThreadAuthenticator``, on its own context so runs in one process do not share it) admits
  only client public keys found in the allow-lists. A peer that is not admitted gets nothing:
  no records, no snapshot, and its commands never reach the run.
* **Read-only viewers.** Two allow-lists: ``allow/control`` (telemetry and commands) and
  ``allow/telemetry`` (telemetry only). Snapshot requests and commands share the ROUTER socket,
  so the transport reads each message's ZAP ``User-Id`` (the client's z85 public key) and
  refuses commands from keys that are not in the control list.

Keys folder layout (what ``diag keys`` writes; folder 0700, secret files 0600)::

    keys/server.key              server public key — give it to viewers
    keys/server.key_secret       server secret key — stays on the training host
    keys/clients/NAME.key        a viewer's public key
    keys/clients/NAME.key_secret a viewer's secret key — copy it to that viewer only
    keys/allow/control/NAME.key  public keys that may watch and send commands
    keys/allow/telemetry/NAME.key public keys that may only watch

Environment: ``EDGEWATCH_KEYS`` (the folder; both sides), ``EDGEWATCH_CLIENT`` (the client name
in it, default ``viewer``), or for a viewer that only got two files ``EDGEWATCH_SERVER_KEY``
(the server's ``.key``) and ``EDGEWATCH_CLIENT_KEY`` (its own ``.key_secret``).

Also here: the per-peer token bucket that bounds commands on the control socket.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from probes.endpoints import Endpoint, EndpointError, is_loopback

log = logging.getLogger("edgewatch.security")

DEFAULT_KEYS_DIR = Path("~/.edgewatch/keys")
DEFAULT_CLIENT = "viewer"
ENV_KEYS = "EDGEWATCH_KEYS"
ENV_CLIENT = "EDGEWATCH_CLIENT"
ENV_SERVER_KEY = "EDGEWATCH_SERVER_KEY"
ENV_CLIENT_KEY = "EDGEWATCH_CLIENT_KEY"
ZAP_DOMAIN = "edgewatch"
CONTROL, TELEMETRY = "control", "telemetry"


class KeysError(ValueError):
    """A keys folder or key file that cannot be used; the message says what to do."""


class InsecureBindError(EndpointError):
    """A non-loopback bind without keys and without ``insecure=True``."""


# -- refusal rule ------------------------------------------------------------------------------
def insecure_bind_message(endpoint: Endpoint) -> str:
    return (
        f"refusing to bind {endpoint.telemetry} without keys: anyone who reaches that address "
        "could read the run and steer it. Either create keys with `diag keys` and pass "
        f"keys=DIR (or --keys DIR, or {ENV_KEYS}=DIR), or keep the default 127.0.0.1 bind and "
        f"reach it through an SSH tunnel (ssh -L {endpoint.port}:127.0.0.1:{endpoint.port} "
        f"-L {endpoint.port + 1}:127.0.0.1:{endpoint.port + 1} HOST). insecure=True "
        "(--insecure) binds anyway."
    )


def check_bind(endpoint: Endpoint, *, secure: bool, insecure: bool) -> None:
    """Apply the refusal rule; warn when the caller overrode it."""
    if secure or is_loopback(endpoint):
        return
    if not insecure:
        raise InsecureBindError(insecure_bind_message(endpoint))
    log.warning(
        "INSECURE: %s is bound without authentication; anyone who reaches it can read and "
        "steer this run (create keys with `diag keys`)",
        endpoint.telemetry,
    )


# -- key material ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerKeys:
    """The server's key pair and the two allow-lists (z85 public keys)."""

    public: bytes
    secret: bytes
    control: frozenset[bytes]
    telemetry: frozenset[bytes]
    rank_public: bytes | None = None
    """The job's rank pair (``rank.key``/``rank.key_secret``): under torchrun every rank > 0
    authenticates with it on the links to rank 0, and rank 0 admits only it there."""
    rank_secret: bytes | None = None

    @property
    def allowed(self) -> frozenset[bytes]:
        return self.control | self.telemetry

    def may_control(self, user_id: str | None) -> bool:
        return user_id is not None and user_id.encode() in self.control

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> ServerKeys:
        root = Path(folder).expanduser()
        public, secret = _load_pair(root / "server.key_secret", "the server")
        control = _public_keys(root / "allow" / CONTROL)
        telemetry = _public_keys(root / "allow" / TELEMETRY)
        if not control and not telemetry:
            raise KeysError(
                f"{root}/allow/ holds no client keys: add one with `diag keys {root} --client NAME`"
            )
        rank_public = rank_secret = None
        if (root / "rank.key_secret").exists():
            rank_public, rank_secret = _load_pair(root / "rank.key_secret", "the ranks")
        return cls(
            public,
            secret,
            frozenset(control),
            frozenset(telemetry - control),
            rank_public,
            rank_secret,
        )


@dataclass(frozen=True)
class ClientKeys:
    """What a viewer needs: the server's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(
        cls, server_key: str | os.PathLike[str], client_key: str | os.PathLike[str]
    ) -> ClientKeys:
        server_public = _load_public(Path(server_key).expanduser(), "the server")
        public, secret = _load_pair(Path(client_key).expanduser(), "this viewer")
        return cls(server_public, public, secret)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str = DEFAULT_CLIENT) -> ClientKeys:
        root = Path(folder).expanduser()
        return cls.load(root / "server.key", root / "clients" / f"{name}.key_secret")


def _load_public(path: Path, whose: str) -> bytes:
    return _load_certificate(path, f"no public key for {whose}")[0]


def _load_pair(path: Path, whose: str) -> tuple[bytes, bytes]:
    public, secret = _load_certificate(path, f"no secret key for {whose}")
    if secret is None:
        raise KeysError(f"{path} holds no secret key (use the .key_secret file)")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return public, secret


def _load_certificate(path: Path, missing: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeysError(f"{missing} at {path} (create one with `diag keys`)")
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path} is not a CurveZMQ key file: {exc}") from None


def _public_keys(folder: Path) -> set[bytes]:
    if not folder.is_dir():
        return set()
    try:
        return set(zmq.auth.load_certificates(folder))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{folder}: unreadable key file: {exc}") from None


def resolve_server_keys(
    keys: ServerKeys | str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
) -> ServerKeys | None:
    """``keys`` as given, else ``$EDGEWATCH_KEYS``, else None (no authentication)."""
    if isinstance(keys, ServerKeys):
        return keys
    env = os.environ if env is None else env
    folder = keys if keys is not None else env.get(ENV_KEYS)
    return ServerKeys.load(folder) if folder else None


def resolve_client_keys(
    *,
    keys_dir: str | os.PathLike[str] | None = None,
    client: str | None = None,
    server_key: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientKeys | None:
    """Arguments win over the environment; key files win over a folder; None = no CURVE."""
    env = os.environ if env is None else env
    if server_key or client_key:
        return _from_files(server_key, client_key)
    if keys_dir:
        return ClientKeys.from_folder(keys_dir, client or env.get(ENV_CLIENT) or DEFAULT_CLIENT)
    if env.get(ENV_SERVER_KEY) or env.get(ENV_CLIENT_KEY):
        return _from_files(env.get(ENV_SERVER_KEY), env.get(ENV_CLIENT_KEY))
    if env.get(ENV_KEYS):
        return ClientKeys.from_folder(
            env[ENV_KEYS], client or env.get(ENV_CLIENT) or DEFAULT_CLIENT
        )
    return None


def _from_files(
    server_key: str | os.PathLike[str] | None, client_key: str | os.PathLike[str] | None
) -> ClientKeys:
    if not (server_key and client_key):
        raise KeysError(
            "a viewer needs both the server's public key (--server-key, "
            f"{ENV_SERVER_KEY}) and its own secret key (--client-key, {ENV_CLIENT_KEY})"
        )
    return ClientKeys.load(server_key, client_key)


# -- creating keys -----------------------------------------------------------------------------
@dataclass
class CreatedKeys:
    folder: Path
    server_created: bool
    client: str
    client_secret: Path
    role: str


def create_keys(
    folder: str | os.PathLike[str],
    client: str = DEFAULT_CLIENT,
    *,
    read_only: bool = False,
    force: bool = False,
) -> CreatedKeys:
    """Create the server pair (once) and one named client pair, allowed control or read-only.

    Never overwrites silently: an existing client of that name is an error unless ``force``.
    """
    if not client or not client.replace("-", "").replace("_", "").isalnum():
        raise KeysError(f"client name {client!r}: use letters, digits, '-' and '_'")
    root = Path(folder).expanduser()
    for sub in (
        root,
        root / "clients",
        root / "allow",
        root / "allow" / CONTROL,
        root / "allow" / TELEMETRY,
    ):
        if not sub.exists():  # a folder the user already had keeps its permissions
            sub.mkdir(parents=True)
            sub.chmod(0o700)
    server_created = not (root / "server.key_secret").exists()
    if server_created:
        _create_pair(root, "server")
    if server_created or not (root / "rank.key_secret").exists():
        _create_pair(root, "rank")  # what ranks > 0 of a torchrun job present to rank 0
    secret = root / "clients" / f"{client}.key_secret"
    if secret.exists() and not force:
        raise KeysError(
            f"{secret} already exists; pass --force to replace client {client!r} "
            "(its old key stops working) or choose another --client name"
        )
    for role in (CONTROL, TELEMETRY):
        (root / "allow" / role / f"{client}.key").unlink(missing_ok=True)
    _create_pair(root / "clients", client)
    role = TELEMETRY if read_only else CONTROL
    shutil.copyfile(root / "clients" / f"{client}.key", root / "allow" / role / f"{client}.key")
    return CreatedKeys(root, server_created, client, secret, role)


def _create_pair(folder: Path, name: str) -> None:
    for suffix in (".key", ".key_secret"):
        (folder / f"{name}{suffix}").unlink(missing_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    Path(secret).chmod(stat.S_IRUSR | stat.S_IWUSR)
    Path(public).chmod(0o644)


def usage_text(created: CreatedKeys) -> str:
    """How to use the keys just created (printed by ``diag keys``)."""
    root, name = created.folder, created.client
    role = "watch only (read-only)" if created.role == TELEMETRY else "watch and send commands"
    return "\n".join(
        [
            f"keys in {root}  ({'new server key, ' if created.server_created else ''}"
            f"client {name!r} may {role})",
            "",
            "training host:",
            f"  Monitor(run=..., bind='tcp://0.0.0.0:5555', keys='{root}')",
            f"  or: {ENV_KEYS}={root} python train.py",
            f"  or: diag run NAME --no-tui --endpoint tcp://0.0.0.0:5555 --keys {root}",
            "",
            "viewer on the same machine:",
            f"  diag watch tcp://HOST:5555 --keys {root} --client {name}",
            "viewer elsewhere: copy server.key and this client's .key_secret there, then:",
            f"  diag watch tcp://HOST:5555 --server-key server.key --client-key {name}.key_secret",
            f"  (or set {ENV_SERVER_KEY} and {ENV_CLIENT_KEY})",
            f"keep {created.client_secret.name} and server.key_secret private.",
        ]
    )


# -- applying keys to sockets ------------------------------------------------------------------
def start_authenticator(
    ctx: zmq.Context,
    keys: ServerKeys,
    on_denied: Callable[[], None] | None = None,
    allowed: frozenset[bytes] | None = None,
) -> ThreadAuthenticator:
    """A ZAP handler on ``ctx`` admitting exactly the allow-listed client keys (or
    ``allowed``); ``on_denied`` is called (on the handler's thread) for each refused CURVE
    handshake, to count it."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("edgewatch.zap"))
    auth.start()
    admitted = keys.allowed if allowed is None else allowed
    auth.configure_curve_callback(ZAP_DOMAIN, _AllowList(admitted, on_denied))
    return auth


class _AllowList:
    """Credentials provider for ``ThreadAuthenticator`` (called with z85 keys)."""

    def __init__(
        self, allowed: frozenset[bytes], on_denied: Callable[[], None] | None = None
    ) -> None:
        self.allowed = allowed
        self.on_denied = on_denied

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.allowed
        if not allowed and self.on_denied is not None:
            self.on_denied()
        return allowed


def make_curve_server(sock: zmq.Socket, keys: ServerKeys) -> None:
    """Before bind: the socket is a CURVE server checked by the ZAP handler."""
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def rank_client_keys(keys: ServerKeys) -> ClientKeys:
    """What a rank > 0 presents to rank 0: the rank pair, checked against the server key."""
    if keys.rank_public is None or keys.rank_secret is None:
        raise KeysError(
            "the keys folder has no rank pair (rank.key, rank.key_secret) for a torchrun job: "
            "run `diag keys DIR` once more to add it, and give every node the same folder"
        )
    return ClientKeys(keys.public, keys.rank_public, keys.rank_secret)


def make_curve_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Before connect: the socket authenticates with the viewer's pair."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


def frame_user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id (the client's z85 public key under CURVE) of a received frame."""
    try:
        return frame.get("User-Id")
    except (zmq.ZMQError, AttributeError, TypeError):
        return None


# -- rate limiting -----------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per peer: ``burst`` commands at once, then ``rate`` per second.

    Bounded memory: at most ``max_peers`` buckets, the least recently used evicted (a peer
    cycling identities gains only a fresh burst, and the command queue is bounded anyway).
    """

    def __init__(self, rate: float = 20.0, burst: int = 40, max_peers: int = 1024) -> None:
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def allow(self, peer: bytes, now: float | None = None, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``peer``'s bucket (False, nothing taken, if it lacks
        them; a cost above ``burst`` is never allowed)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        self._buckets[peer] = (tokens - cost if allowed else tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed
