"""TLS policy for the upstream connection, and readable names for TLS failures.

* ``verify: true`` (default) — the platform's trust store, hostname checked by service-identity.
* ``verify: "/path/ca.pem"`` — trust exactly the certificates in that PEM bundle (or every ``*.pem``/``*.crt`` in a
  directory), hostname still checked. This is how a self-signed llama-server is used safely.
* ``verify: false`` — no verification at all; an explicit policy, warned about at start-up.
"""

from __future__ import annotations

import os
import re
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TLSConfigError(ValueError):
    """The CA file cannot be used."""


@implementer(IPolicyForHTTPS)
class InsecurePolicy:
    """Accept any certificate and any hostname: only for ``upstream.verify: false``."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.CertificateOptions(verify=False)


def load_ca_certificates(path: str) -> list[ssl.Certificate]:
    """Every certificate in a PEM bundle, or in the ``*.pem``/``*.crt`` files of a directory."""
    files = (
        [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith((".pem", ".crt"))]
        if os.path.isdir(path)
        else [path]
    )
    certs = []
    for name in files:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise TLSConfigError(f"cannot read CA file {name}: {e.strerror}") from None
        for pem in _PEM_CERT.findall(data):
            try:
                certs.append(ssl.Certificate.loadPEM(pem))
            except Exception:
                raise TLSConfigError(f"CA file {name} holds a certificate that cannot be parsed") from None
    if not certs:
        raise TLSConfigError(f"no PEM certificate found in {path}")
    return certs


def policy_for(verify: bool | str) -> Any:
    if verify is False:
        return InsecurePolicy()
    if verify is True:
        return BrowserLikePolicyForHTTPS()
    return BrowserLikePolicyForHTTPS(trustRoot=ssl.trustRootFromCertificates(load_ca_certificates(verify)))


def describe_tls_failure(failure: Failure) -> str | None:
    """A short human reason if ``failure`` is a TLS handshake/verification failure, else ``None``."""
    from service_identity import VerificationError

    if failure.check(VerificationError):
        return f"certificate does not match the host name ({failure.value})"
    if failure.check(SSL.Error):
        parts = []
        for arg in failure.value.args if failure.value is not None else ():
            if isinstance(arg, list):
                for item in arg:
                    if isinstance(item, tuple) and item:
                        parts.append(str(item[-1]))
        text = "; ".join(p for p in parts if p) or str(failure.value)
        if "certificate verify failed" in text:
            return f"certificate verify failed ({text}); trust its CA with --ca-file or upstream.verify: PATH"
        return text
    return None
