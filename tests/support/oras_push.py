#!/usr/bin/env python3
"""Push files to an OCI registry with oras-py (PyPI `oras`), as an oras user would.

    oras_push.py REF FILE[:MEDIA_TYPE]... [--config-media-type TYPE]
                 [--username USER --password PASSWORD]

Each FILE becomes one layer (default media type `application/wasm`). The config
defaults to a CNCF Wasm config (`application/vnd.wasm.config.v0+json`, with
`architecture: wasm`, `os: wasip2` and the layer digests); any other
`--config-media-type` gets an empty JSON object. Registries on loopback are
spoken to over plain HTTP. Prints the manifest digest on stdout.

Used by berth's integration tests (tests/all/oci.rs) for interop checks.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys
import tempfile

import oras.client

WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/wasm"


def split_file(arg):
    path, sep, media_type = arg.rpartition(":")
    if not sep or "/" not in media_type:
        return arg, WASM_LAYER
    return path, media_type


def loopback(registry):
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    return host in ("localhost", "[::1]") or host.startswith("127.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref")
    parser.add_argument("files", nargs="+", metavar="FILE[:MEDIA_TYPE]")
    parser.add_argument("--config-media-type", default=WASM_CONFIG)
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()

    files = [split_file(f) for f in args.files]
    for path, _ in files:
        if not os.path.isfile(path):
            sys.exit(f"oras_push.py: no such file: {path}")

    if args.config_media_type == WASM_CONFIG:
        digests = []
        for path, _ in files:
            with open(path, "rb") as f:
                digests.append("sha256:" + hashlib.sha256(f.read()).hexdigest())
        config = {
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": digests,
            "component": {"exports": [], "imports": [], "target": None},
        }
    else:
        config = {}

    registry = args.ref.split("/", 1)[0]
    client = oras.client.OrasClient(hostname=registry, insecure=loopback(registry))
    if args.username:
        client.auth.set_basic_auth(args.username, args.password or "")

    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        response = client.push(
            target=args.ref,
            files=[f"{path}:{media_type}" for path, media_type in files],
            manifest_config=f"{config_path}:{args.config_media_type}",
            disable_path_validation=True,
            quiet=True,
        )
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        sys.exit("oras_push.py: the registry returned no manifest digest")
    print(digest)


if __name__ == "__main__":
    main()
