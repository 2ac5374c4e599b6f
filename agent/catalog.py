"""The product catalog shipped with the app: loaded once, shared by every session, read-only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

CATALOG_PATH = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    unit: str
    price: float


def normalize_item_name(text: str) -> str:
    """Lower-case, drop articles and punctuation: "an Apple!" -> "apple"."""
    text = re.sub(r"[^\w\s-]", " ", text.lower())
    words = [w for w in text.split() if w not in {"a", "an", "the", "some", "of"}]
    return " ".join(words)


@dataclass(frozen=True)
class Catalog:
    """Read-only product lookup. Built once per process; holds no per-user data."""

    currency: str
    products: Mapping[str, Product]
    aliases: Mapping[str, str]

    def find(self, item: str) -> Product | None:
        key = normalize_item_name(item)
        sku = self.aliases.get(key)
        if sku is None and key.endswith("s"):
            sku = self.aliases.get(key[:-1])
        return self.products.get(sku) if sku else None


@lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    raw = json.loads(path.read_text(encoding="utf-8"))
    products: dict[str, Product] = {}
    aliases: dict[str, str] = {}
    for entry in raw["products"]:
        product = Product(entry["sku"], entry["name"], entry["unit"], float(entry["price"]))
        products[product.sku] = product
        for alias in [product.sku, product.name, *entry.get("aliases", [])]:
            aliases[normalize_item_name(alias)] = product.sku
    return Catalog(raw["currency"], MappingProxyType(products), MappingProxyType(aliases))
