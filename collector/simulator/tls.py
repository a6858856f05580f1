"""A throwaway CA and server certificate for `--tls`, so clients verify for real."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca_path: Path  # give this to clients as their CA bundle
    cert_path: Path  # server certificate chain
    key_path: Path


def make_tls_files(directory: Path, hosts: list[str]) -> TlsFiles:
    """Issue a server certificate for `hosts` (names or IPs, plus localhost and 127.0.0.1)
    from a new CA, and write the CA, the chain and the key as PEM files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([*hosts, "localhost", "127.0.0.1", "::1"]))
    ca = trustme.CA(organization_name="iscsi-audit simulator")
    cert = ca.issue_cert(*names)
    files = TlsFiles(
        directory / "simulator-ca.pem",
        directory / "simulator-cert.pem",
        directory / "simulator-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca_path))
    cert.private_key_pem.write_to_path(str(files.key_path))
    files.cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    files.key_path.chmod(0o600)
    return files
