"""`natsync check` on [portmap] ipv6: a mapping that translates ports gets no IPv6 pinhole, and
the check says so without stopping natsync run (the part maps it over IPv4)."""

from __future__ import annotations

from pathlib import Path

from natsync.run.checks import check_file


def _problems(tmp_path: Path, mappings: str) -> list[str]:
    config = tmp_path / "natsync.toml"
    config.write_text(
        '[server]\nport = 0\ndata_dir = "data"\n\n'
        f'[portmap]\nipv6 = "auto"\nmappings = {mappings}\n'
    )
    deployment, problems = check_file(config)
    assert deployment is not None
    return [p.line() for p in problems if p.where == "portmap.ipv6" and not p.fatal]


def test_a_translated_port_is_named_as_ipv4_only(tmp_path: Path) -> None:
    (line,) = _problems(tmp_path, '["443:8443/tcp", "25/tcp"]')
    assert line.startswith("portmap.ipv6: 443->8443/tcp translate(s) ports: IPv4 only")
    assert _problems(tmp_path, '["443/tcp", "25:25/tcp"]') == []
