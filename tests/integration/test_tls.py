"""TLS: a master with a private certificate serves https and wss; clients and workers verify it with
``--ca`` (or ``ca=``), and without the right CA they fail at once with a one-line reason, exit code 3.

The test makes its own CA and a server certificate for 127.0.0.1/localhost, so nothing here depends on
the machine's trust store, and a second CA that signed nothing stands for "the wrong CA".
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import rvidia
from harness import (Master, Processes, assert_one_line_error, reference_result, run_cli, start_worker,
                     wait_for_workers, wait_until)
from rvidia import tls

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------- certificates


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(folder: Path, common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    """A self-signed CA certificate (written as ``<common>.pem``) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{common}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(folder: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by ``ca``; return (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("rvidia test master")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "master.pem", folder / "master.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@dataclass
class TlsMaster:
    master: Master
    ca: Path
    wrong_ca: Path

    @property
    def url(self) -> str:
        return self.master.url

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.master.token}"},
                            timeout=30, verify=tls.client_context(str(self.ca)))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsMaster, Processes]]:
    """A master with a private certificate and one worker that verifies it with --ca."""
    base = tmp_path_factory.mktemp("tls")
    certs = base / "certs"
    certs.mkdir()
    ca_key, ca_cert, ca_path = make_ca(certs, "rvidia-test-ca")
    _, _, wrong = make_ca(certs, "some-other-ca")
    cert, key = make_server_cert(certs, ca_key, ca_cert)
    group = Processes(base)
    try:
        master = Master(group, base / "data", extra=["--tls-cert", str(cert), "--tls-key", str(key),
                                                      "--no-advertise"]).start()
        made = TlsMaster(master, ca_path, wrong)
        start_worker(group, master.url, master.token, "secure-1", slots=2,
                     extra=("--ca", str(ca_path), "--allow-code"))
        with made.api() as api:
            wait_for_workers(api, ["secure-1"], timeout=60)
        yield made, group
    finally:
        group.stop_all()


def test_the_master_serves_https(secure: tuple[TlsMaster, Processes]) -> None:
    made, _ = secure
    assert made.url.startswith("https://127.0.0.1:")
    with made.api() as api:
        assert api.get("/api/v1/health").json()["status"] == "ok"


def test_cli_submit_with_the_ca_gives_the_exact_result(secure: tuple[TlsMaster, Processes]) -> None:
    made, _ = secure
    params = {"samples": 6_000_000, "seed": 5, "chunk_samples": 500_000}
    done = run_cli("submit", "montecarlo", *[f"-p{k}={v}" for k, v in params.items()], "--wait",
                   "--master", made.url, "--ca", str(made.ca), token=made.master.token)
    assert done.code == 0, done.stderr
    assert done.json() == reference_result(**params)
    listed = run_cli("workers", "--json", "--master", made.url, "--ca", str(made.ca), token=made.master.token)
    assert listed.code == 0, listed.stderr
    assert [w["name"] for w in listed.json() if w["state"] != "lost"] == ["secure-1"]


def test_python_api_with_ca_runs_blob_kinds_and_the_executor(secure: tuple[TlsMaster, Processes],
                                                              tmp_path: Path) -> None:
    """matmul fetches ``b`` through the worker's https client and ``a`` by ranges from the chunk
    processes; the executor speaks wss on /ws/client: every one of them verifies the private CA."""
    made, _ = secure
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((90, 40)), rng.standard_normal((40, 30))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    with rvidia.connect(made.url, token=made.master.token, ca=made.ca) as cluster:
        job = cluster.submit("matmul", inputs={"a": tmp_path / "a.npy", "b": tmp_path / "b.npy"}, block_rows=20)
        job.result(timeout=60)
        c = np.load(job.download_outputs(tmp_path / "out")["c.npy"])
        np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)
        with cluster.executor() as ex:
            assert list(ex.map(lambda x: x * x, range(20))) == [x * x for x in range(20)]


def test_the_env_var_gives_the_ca_too(secure: tuple[TlsMaster, Processes]) -> None:
    made, _ = secure
    env = {"RVIDIA_CA": str(made.ca)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with rvidia.connect(made.url, token=made.master.token) as cluster:
            assert cluster.health()["status"] == "ok"


@pytest.mark.parametrize("which", ["none", "wrong"])
def test_cli_without_the_right_ca_exits_3_with_a_reason(secure: tuple[TlsMaster, Processes], which: str) -> None:
    made, _ = secure
    extra = ["--ca", str(made.wrong_ca)] if which == "wrong" else []
    for args in (["jobs"], ["submit", "montecarlo", "-p", "samples=1000", "--wait"]):
        done = run_cli(*args, "--master", made.url, *extra, token=made.master.token)
        assert_one_line_error(done, 3)
        assert "certificate" in done.stderr and made.url in done.stderr, done.stderr
        if which == "none":
            assert "--ca" in done.stderr, done.stderr


def test_python_api_without_the_ca_raises_master_unreachable(secure: tuple[TlsMaster, Processes]) -> None:
    made, _ = secure
    with rvidia.connect(made.url, token=made.master.token, ca=made.wrong_ca) as cluster:
        with pytest.raises(rvidia.MasterUnreachable, match="certificate"):
            cluster.health()


def test_a_ca_file_that_is_no_certificate_is_bad_usage(secure: tuple[TlsMaster, Processes], tmp_path: Path) -> None:
    made, _ = secure
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    done = run_cli("jobs", "--master", made.url, "--ca", str(junk), token=made.master.token)
    assert_one_line_error(done, 2)
    assert str(junk) in done.stderr


@pytest.mark.parametrize("which", ["none", "wrong"])
def test_a_worker_without_the_right_ca_exits_3_with_a_reason(secure: tuple[TlsMaster, Processes],
                                                             which: str) -> None:
    made, group = secure
    extra = ("--ca", str(made.wrong_ca)) if which == "wrong" else ()
    name = f"untrusting-{which}"
    proc = start_worker(group, made.url, made.master.token, name, extra=extra)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("a worker that cannot verify the master's certificate should exit") from None
    log = (group.log_dir / f"worker-{name}.log").read_text()
    assert code == 3, log
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "certificate" in line]
    assert len(lines) == 1 and made.url in lines[0], log
    with made.api() as api:
        names = [w["name"] for w in api.get("/api/v1/workers").json()]
    assert name not in names
    wait_until(lambda: proc.poll() is not None, 5, message="the worker to be gone")
