"""Start-up checks that need the machine, run by ``makeService`` before twistd starts logging or listening.

twistd binds listeners in ``privilegedStartService``, after it has started logging, so a port that is already taken
would surface as a ``CannotListenError`` traceback in the log. These checks say the same thing first, in one line:
a TCP/SSL port already in use (or not ours to take), an SSL key or certificate that is missing, unreadable, not PEM
or not a pair, a Unix socket whose directory is missing or that another process serves, a supervised llama-server
binary or model file that does not exist, and a PostgreSQL Responses store that does not answer (or a URL psycopg
cannot read). Each raises :class:`StartupError`; ``tap`` prints it and exits with status 1.

A port is checked by binding it (with ``SO_REUSEADDR``, as Twisted binds) and letting it go again; a process that
takes the port in the moment between this check and twistd's own bind still gets twistd's traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from typing import Any

from llamashim.config import Config, SpawnConfig, shown_url


class StartupError(Exception):
    """Why llamashim cannot start here, in one line."""


def check(config: Config) -> None:
    """Every check, in the order makeService runs them."""
    for description in config.listen:
        check_listener(description)
    for spec in config.upstream_specs():
        if spec.spawn is not None:
            check_spawn(spec.name, spec.spawn)
    if config.responses.store and config.responses.store_url:
        check_store(config.responses.store_url)


# -- listeners -----------------------------------------------------------------------------------------------------

# The positional arguments of each endpoint kind, in Twisted's order (twisted.internet.endpoints._parse*).
_POSITIONAL = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


def split_endpoint(description: str) -> tuple[str, dict[str, str]]:
    """An endpoint string's kind and arguments by name (``\\:`` is a literal colon, as in Twisted)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    kind, rest = parts[0], parts[1:]
    names = _POSITIONAL.get(kind, ())
    args: dict[str, str] = {}
    position = 0
    for part in rest:
        name, eq, value = part.partition("=")
        if eq:
            args[name] = value
        elif position < len(names):
            args[names[position]] = part
            position += 1
    return kind, args


def check_listener(description: str) -> None:
    kind, args = split_endpoint(description)
    if kind == "ssl":
        key = args.get("privateKey", "server.pem")
        check_tls(description, key, args.get("certKey") or key)
    if kind in ("tcp", "tcp6", "ssl"):
        try:
            port = int(args.get("port", ""))
        except ValueError:
            return  # serverFromString says what is wrong with it
        default = "::" if kind == "tcp6" else ""
        check_port(description, args.get("interface", default), port)
    elif kind == "unix" and args.get("address"):
        check_unix(description, args["address"])


def check_port(description: str, interface: str, port: int) -> None:
    """Bind ``interface``:``port`` once, as Twisted will, to see that it can be had."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    where = f"{interface or 'every interface'} port {port}"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((interface, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                why = "is already in use (another llamashim or llama-server?"
                why += f" `ss -ltnp 'sport = :{port}'` shows which process)"
            elif e.errno == errno.EACCES:
                why = "is not ours to take (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            elif e.errno == errno.EADDRNOTAVAIL:
                why = "cannot be had: no network interface here has that address"
            else:
                why = f"cannot be had: {e.strerror or e}"
            raise StartupError(f"listener {description!r}: {where} {why}") from None


def check_tls(description: str, key_path: str, cert_path: str) -> None:
    """The key and the certificate of an ``ssl:`` listener: readable, PEM, and one pair."""
    from OpenSSL import crypto

    def read(path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise StartupError(f"listener {description!r}: cannot read the TLS {what} {path}: {e.strerror}") from None

    key_pem, cert_pem = read(key_path, "private key (privateKey=)"), read(cert_path, "certificate (certKey=)")
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error:
        raise StartupError(f"listener {description!r}: {key_path} holds no PEM private key (privateKey=)") from None
    try:
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    except crypto.Error:
        raise StartupError(f"listener {description!r}: {cert_path} holds no PEM certificate (certKey=)") from None
    if _public_der(cert.get_pubkey()) != _public_der(key):
        raise StartupError(
            f"listener {description!r}: the private key {key_path} does not belong to the certificate {cert_path}"
        )


def _public_der(key: Any) -> bytes:
    """The public half of a pyOpenSSL key, as DER (comparable whatever the key type)."""
    from OpenSSL import crypto

    return bytes(crypto.dump_publickey(crypto.FILETYPE_ASN1, key))


def check_unix(description: str, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StartupError(f"listener {description!r}: directory {directory} does not exist")
    if os.path.exists(path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(path)
            except OSError:
                return  # a stale socket file: Twisted replaces it
        raise StartupError(f"listener {description!r}: another process is serving {path}")


# -- the supervised llama-server -----------------------------------------------------------------------------------


def check_spawn(name: str, spawn: SpawnConfig) -> None:
    from llamashim.upstream.supervisor import default_binary

    where = f"upstream {name!r}" if name != "default" else "upstream.spawn"
    if spawn.binary:
        binary = spawn.binary if os.sep in spawn.binary else (shutil.which(spawn.binary) or spawn.binary)
    else:
        try:
            binary = default_binary()
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise StartupError(f"{where}: {e}") from None
    if not os.path.isfile(binary):
        raise StartupError(f"{where}: the llama-server binary {binary} does not exist (upstream.spawn.binary)")
    if not os.access(binary, os.X_OK):
        raise StartupError(f"{where}: the llama-server binary {binary} is not executable (upstream.spawn.binary)")
    if not os.path.isfile(spawn.model):
        raise StartupError(f"{where}: the model file {spawn.model} does not exist (upstream.spawn.model)")
    if not os.access(spawn.model, os.R_OK):
        raise StartupError(f"{where}: the model file {spawn.model} cannot be read (upstream.spawn.model)")


# -- the Responses store -------------------------------------------------------------------------------------------


def check_store(url: str) -> None:
    """``responses.store_url``: the database answers (a connection opens and runs ``SELECT 1``)."""
    from llamashim.dialects.responses.sql import unreachable

    why = unreachable(url)
    if why is not None:
        raise StartupError(f"responses.store_url {shown_url(url)}: {why}")
