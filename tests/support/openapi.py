"""Validate JSON bodies against Alpaca's official OpenAPI specs (OpenAPI 3.0 → JSON Schema 2020-12).

The specs are the June 2026 copies in ``/work/shared/reference/alpaca-openapi`` (see PROVENANCE.md
there). ``format`` is checked too (``uuid``, ``date-time``, ``date``), so an order id that is not a
UUID or a timestamp that is not RFC 3339 fails like a missing field does.
"""

from __future__ import annotations

import copy
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

REFERENCE = Path("/work/shared/reference/alpaca-openapi")


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema (``type: [t, "null"]``)."""
    if isinstance(node, dict):
        converted = {key: _openapi_to_jsonschema(value) for key, value in node.items()}
        if converted.pop("nullable", False) and "type" in converted:
            converted["type"] = [converted["type"], "null"]
        return converted
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    return node


class OpenApiSpec:
    """One spec file; its components are converted once, on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @cached_property
    def components(self) -> dict[str, Any]:
        spec = json.loads(self.path.read_text())
        converted: dict[str, Any] = _openapi_to_jsonschema(copy.deepcopy(spec["components"]))
        return converted

    def schema_names(self) -> set[str]:
        return set(self.components["schemas"])

    def validate(self, body: Any, schema_name: str) -> None:
        """Raise :class:`jsonschema.ValidationError` unless ``body`` matches the schema ``schema_name``."""
        if schema_name not in self.components["schemas"]:
            raise KeyError(f"{self.path.name} has no schema {schema_name!r}")
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": self.components}
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(body)


TRADING_SPEC = OpenApiSpec(REFERENCE / "trading-api.json")
MARKET_DATA_SPEC = OpenApiSpec(REFERENCE / "market-data-api.json")
