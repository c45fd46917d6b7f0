"""Verifying a master's TLS certificate: the ``--ca FILE`` / ``$RVIDIA_CA`` every client command,
the worker and ``rvidia.connect(ca=...)`` share.

A lab's master usually has a private certificate (its own CA, or self-signed): no system trust store
knows it, so clients are given the CA to verify against instead of turning verification off. Given a
CA, only it is trusted (like ``curl --cacert``); without one, the system's usual store is.
"""

from __future__ import annotations

import os
import ssl

ENV = "RVIDIA_CA"
NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def ca_file(given: str | os.PathLike[str] | None) -> str | None:
    """``--ca``, else $RVIDIA_CA, else None (the default trust store)."""
    value = given or os.environ.get(ENV)
    return os.fspath(os.path.expanduser(value)) if value else None


def client_context(ca: str | None) -> ssl.SSLContext:
    """A client context that verifies the master's certificate and host name against ``ca`` (or the
    default store); a CA file that cannot be loaded is a ValueError naming it (exit 2, not 3)."""
    if not ca:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca)
    except FileNotFoundError:
        raise ValueError(f"no such CA file: {ca}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA certificate {ca}: {getattr(exc, 'reason', None) or exc}") from None


def httpx_verify(ca: str | None) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` takes: the CA's context, or True (httpx's own default store)."""
    return client_context(ca) if ca else True


def ws_ssl(url: str, ca: str | None) -> ssl.SSLContext | None:
    """websockets' ``ssl=`` for ``url``: a verifying context for wss://, None for ws:// (websockets
    refuses a context with ws:// and, since 14, an explicit None with wss://)."""
    return client_context(ca) if url.startswith("wss://") else None


def verify_failure(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (httpx and websockets wrap it), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def explain(url: str, error: ssl.SSLCertVerificationError, ca: str | None) -> str:
    """One line saying why the master's certificate was refused and what to do about it."""
    why = str(error.verify_message or error.reason or error).rstrip(".")
    if error.verify_code in NAME_MISMATCH:
        hint = "use a host name or address the certificate names in --master"
    elif ca:
        hint = f"it does not chain to the CA in {ca}"
    else:
        hint = "give the CA that signed it with --ca FILE (or RVIDIA_CA)"
    return f"cannot verify the TLS certificate of the master at {url} ({why}): {hint}"
