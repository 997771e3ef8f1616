"""Logging in and signing up, with the identities a real SDK attaches to them."""

from __future__ import annotations

from collections.abc import Iterator
from random import Random

from pipeline.tools.simulator.population import Device, Member, device_identities
from pipeline.tools.simulator.session import Session, Step, page_view


class Logins:
    """Phones and emails come in several spellings so identity resolution must normalise."""

    def __init__(self, rng: Random, phone_share: float) -> None:
        self.rng = rng
        self.phone_share = phone_share

    def login(self, s: Session, member: Member) -> Iterator[Step]:
        """Steps of ``member`` logging in on the session's device (signing up first if new)."""
        dev = s.device
        method = self._method(dev)
        if not member.registered:
            member.registered = True
            dev.user_id = member.user_id
            yield "signup", {"method": method}, self._identities(dev, member, method)
        dev.user_id = member.user_id
        yield "login", {"method": method}, self._identities(dev, member, method)
        if self.rng.random() < 0.3:
            yield "page_view", page_view(self.rng, s, "member_center"), None

    def _method(self, dev: Device) -> str:
        if dev.platform == "miniprogram":
            return self.rng.choices(("wechat", "phone", "password", "other"), (80, 14, 5, 1))[0]
        methods = ("phone", "password", "wechat", "email", "other")
        return self.rng.choices(methods, (45, 25, 15, 12, 3))[0]

    def _identities(self, dev: Device, member: Member, method: str) -> dict[str, str] | None:
        rng = self.rng
        ids = device_identities(dev) or {}
        if dev.platform == "miniprogram" and member is dev.owner and member.unionid:
            ids["unionid"] = member.unionid
        if rng.random() < self.phone_share:
            ids["phone"] = self._phone_spelling(member.phone)
        if method == "email" and rng.random() < 0.8:
            email = member.email
            ids["email"] = email.capitalize() if rng.random() < 0.3 else email
        return ids or None

    def _phone_spelling(self, p: str) -> str:
        spelling = self.rng.random()
        if spelling < 0.8:
            return p
        if spelling < 0.9:
            return f"+86 {p[:3]} {p[3:7]} {p[7:]}"
        return f"{p[:3]}-{p[3:7]}-{p[7:]}"
