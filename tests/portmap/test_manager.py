from __future__ import annotations

import pytest

from natsync.portmap.errors import MappingRefused, PortMapError
from natsync.portmap.manager import Granted, MappingSpec, PortMapper


class FakeRouter:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, MappingSpec, int]] = []
        self.refuse: set[int] = set()

    def map(self, spec: MappingSpec, lifetime: int) -> Granted:
        self.calls.append(("map", spec, lifetime))
        if spec.external_port in self.refuse:
            raise MappingRefused("the router refused (UPnP error 606)", code=606)
        return Granted(spec.external_port, lifetime)

    def unmap(self, spec: MappingSpec) -> None:
        self.calls.append(("unmap", spec, 0))


def test_parse_specs() -> None:
    assert MappingSpec.parse("443:8443/tcp") == MappingSpec("tcp", 8443, 443)
    assert MappingSpec.parse("25") == MappingSpec("tcp", 25, 25)
    assert MappingSpec.parse("53/UDP") == MappingSpec("udp", 53, 53)
    for bad in ("x", "0/tcp", "70000", "443/sctp", "443:/tcp"):
        with pytest.raises(PortMapError):
            MappingSpec.parse(bad)


def test_create_keep_renew_at_half_lifetime_and_release() -> None:
    router = FakeRouter()
    mapper = PortMapper(router, lifetime=100)
    specs = [MappingSpec.parse("443:8443/tcp"), MappingSpec.parse("25/tcp")]
    assert [r.action for r in mapper.ensure(specs, now=1000)] == ["created", "created"]
    assert mapper.next_due() == 1050
    assert [r.action for r in mapper.ensure(specs, now=1049)] == ["kept", "kept"]
    assert [r.action for r in mapper.ensure(specs, now=1050)] == ["renewed", "renewed"]
    assert len(router.calls) == 4
    assert [r.action for r in mapper.release_all()] == ["removed", "removed"]
    assert [c[0] for c in router.calls[-2:]] == ["unmap", "unmap"]
    assert mapper.leases == {}


def test_refusal_is_reported_and_retried_next_time() -> None:
    router = FakeRouter()
    router.refuse.add(25)
    mapper = PortMapper(router, lifetime=100)
    spec = MappingSpec.parse("25/tcp")
    (result,) = mapper.ensure([spec], now=0)
    assert result.action == "failed"
    assert "606" in result.detail
    router.refuse.clear()
    assert mapper.ensure([spec], now=1)[0].action == "created"


def test_permanent_mapping_is_never_renewed() -> None:
    router = FakeRouter()
    mapper = PortMapper(router, lifetime=0)
    spec = MappingSpec.parse("443/tcp")
    mapper.ensure([spec], now=0)
    assert mapper.next_due() is None
    assert mapper.ensure([spec], now=10**9)[0].action == "kept"
