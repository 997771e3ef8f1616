"""The product catalogue: ids, shelf prices and a long-tailed popularity."""

from __future__ import annotations

from random import Random

_PRICE_POINTS = (9.9, 19.9, 29.9, 39.0, 49.0, 59.9, 69.0, 89.0, 99.0, 129.0, 159.0, 199.0,
                 259.0, 299.0, 399.0, 599.0, 899.0, 1299.0)  # fmt: skip


class Catalog:
    """Prices are whole cents so cart totals add up exactly, as a shop's would."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        numbers = rng.sample(range(10_000), 400)
        self.products = [f"p{n:04d}" for n in numbers]
        self.price_cents: dict[str, int] = {}
        for pid in self.products:
            base = round(rng.choice(_PRICE_POINTS) * 100)
            if rng.random() < 0.2:
                base = max(99, base - rng.choice((1, 10, 100)))  # 58.90, 98.99 style
            self.price_cents[pid] = base
        cum, total = [], 0.0
        for rank in range(len(self.products)):
            total += 1.0 / (rank + 1) ** 0.8  # a few products get most of the traffic
            cum.append(total)
        self.product_cum = cum

    def pick(self) -> str:
        """A product as shoppers meet it: popular ones far more often."""
        return self.rng.choices(self.products, cum_weights=self.product_cum)[0]

    def price(self, pid: str) -> float:
        return self.price_cents[pid] / 100
