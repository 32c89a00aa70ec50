#!/usr/bin/env python3
"""Pull a single-layer artifact from an OCI registry with oras-py (PyPI `oras`).

    oras_pull.py REF OUT_FILE [--username USER --password PASSWORD]

Writes the artifact's only layer to OUT_FILE and prints, as JSON on stdout,
what a consumer sees: the manifest, the config media type and the config
document. Refuses artifacts with more or fewer than one layer. Registries on
loopback are spoken to over plain HTTP.

Used by berth's integration tests (tests/all/oci.rs) to check that what
`berth push` writes is readable by other OCI tools.
"""

import argparse
import json
import sys

import oras.client


def loopback(registry):
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    return host in ("localhost", "[::1]") or host.startswith("127.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref")
    parser.add_argument("out")
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()

    registry = args.ref.split("/", 1)[0]
    client = oras.client.OrasClient(hostname=registry, insecure=loopback(registry))
    if args.username:
        client.auth.set_basic_auth(args.username, args.password or "")

    container = client.get_container(args.ref)
    manifest = client.get_manifest(container)
    layers = manifest.get("layers", [])
    if len(layers) != 1:
        sys.exit(f"oras_pull.py: expected exactly one layer, found {len(layers)}")
    client.download_blob(container, layers[0]["digest"], args.out)

    config_response = client.get_blob(container, manifest["config"]["digest"])
    config_response.raise_for_status()
    print(json.dumps({
        "manifest": manifest,
        "config_media_type": manifest["config"]["mediaType"],
        "config": json.loads(config_response.content),
    }))


if __name__ == "__main__":
    main()
