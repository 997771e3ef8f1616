"""Who visits: members and anonymous visitors, and the devices they use.

Identities hang off devices, not sessions, so that One ID has real work to do: a member's
devices share an openid, a family member sometimes borrows a device, and a login stays on
the device until someone else logs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from pipeline.tools.simulator.config import SimConfig

_PLATFORMS = ("miniprogram", "ios", "android", "h5", "web")
_PLATFORM_WEIGHTS = (62, 12, 14, 7, 5)
_APP_VERSIONS: dict[str, tuple[str, ...]] = {
    "miniprogram": ("3.12.0", "3.12.1", "3.11.4"),
    "ios": ("5.4.1", "5.4.0", "5.3.2"),
    "android": ("5.4.0", "5.3.9", "5.2.7"),
    "h5": ("h5-2026.11.2",),
    "web": (),
}
_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclass(eq=False)
class Member:
    user_id: str
    registered: bool
    phone: str
    email: str
    openid: str
    unionid: str | None


@dataclass(eq=False)
class Device:
    anonymous_id: str
    platform: str
    app_version: str | None
    epoch_ms_time: bool  # some SDKs send integer epoch ms instead of RFC 3339
    owner: Member | None
    openid: str | None  # only mini-program devices whose SDK reports it
    shared_with: Member | None = None  # a family member who sometimes uses the device
    user_id: str | None = None  # member logged in on the device; stays until another logs in


def token(rng: Random, n: int) -> str:
    """An opaque id in the alphabet WeChat uses for openid and unionid."""
    return "".join(rng.choices(_TOKEN_ALPHABET, k=n))


def device_identities(dev: Device) -> dict[str, str] | None:
    """What the SDK reports without a login: openid, and unionid once the owner is in."""
    if dev.openid is None:
        return None
    ids = {"openid": dev.openid}
    owner = dev.owner
    if owner is not None and owner.unionid and dev.user_id == owner.user_id:
        ids["unionid"] = owner.unionid
    return ids


class Population:
    """Members and devices of one run, drawn up front so a seed fixes who can appear."""

    def __init__(self, rng: Random, config: SimConfig) -> None:
        self.rng = rng
        n_anon = max(0, config.anonymous_visitors)
        self.members = [self._member(i) for i in range(max(0, config.members))]
        self.devices: list[Device] = []
        self._add_devices(n_anon)

    def _member(self, i: int) -> Member:
        rng = self.rng
        return Member(
            user_id=f"u{i:05d}",
            registered=rng.random() < 0.85,  # the rest sign up on their first login
            phone=f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}",
            email=f"{rng.choice(('li', 'wang', 'zhang', 'chen', 'liu'))}.{i}@"
            f"{rng.choice(('qq.com', '163.com', 'example.com', 'outlook.com'))}",
            openid="o" + token(rng, 27),
            unionid=("un" + token(rng, 26)) if rng.random() < 0.7 else None,
        )

    def _add_devices(self, n_anon: int) -> None:
        rng, members = self.rng, self.members
        n_devices = [rng.choices((1, 2, 3), (55, 30, 15))[0] for _ in members]
        total = sum(n_devices) + n_anon
        ids = rng.sample(range(1_000_000), total) if total <= 1_000_000 else range(total)
        id_iter = iter(ids)
        for member, n in zip(members, n_devices, strict=True):
            for _ in range(n):
                dev = self._device(f"d{next(id_iter):06d}", member)
                if len(members) > 1 and rng.random() < 0.04:
                    other = rng.choice(members)
                    dev.shared_with = other if other is not member else None
                self.devices.append(dev)
        for _ in range(n_anon):
            self.devices.append(self._device(f"d{next(id_iter):06d}", None))

    def _device(self, anonymous_id: str, owner: Member | None) -> Device:
        rng = self.rng
        platform = rng.choices(_PLATFORMS, _PLATFORM_WEIGHTS)[0]
        versions = _APP_VERSIONS[platform]
        app_version = rng.choice(versions) if versions and rng.random() < 0.85 else None
        openid = None
        if platform == "miniprogram" and rng.random() < 0.75:
            # openid is per WeChat account and mini-program, so a member's devices share it.
            openid = owner.openid if owner is not None else "o" + token(rng, 27)
        return Device(
            anonymous_id=anonymous_id,
            platform=platform,
            app_version=app_version,
            epoch_ms_time=rng.random() < 0.15,
            owner=owner,
            openid=openid,
        )
