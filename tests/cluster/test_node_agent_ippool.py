"""The pod IP pool: 127.0.0.2 .. 127.0.0.254, lowest free first."""
from __future__ import annotations

import pytest

from node_agent.common import NotReady
from node_agent.ippool import IPPool


def test_allocates_lowest_free_and_reuses_released():
    pool = IPPool()
    assert [pool.allocate() for _ in range(3)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    pool.release("127.0.0.3")
    assert pool.allocate() == "127.0.0.3"
    assert pool.allocate() == "127.0.0.5"


def test_exhaustion_then_release():
    pool = IPPool()
    ips = [pool.allocate() for _ in range(253)]
    assert ips[-1] == "127.0.0.254" and len(set(ips)) == 253
    with pytest.raises(NotReady) as e:
        pool.allocate()
    assert e.value.reason == "IPExhausted"
    pool.release("127.0.0.100")
    assert pool.allocate() == "127.0.0.100"


@pytest.mark.parametrize("ip", [None, "", "127.0.0.1", "10.0.0.2"])
def test_release_ignores_what_it_never_hands_out(ip):
    pool = IPPool()
    pool.allocate()
    pool.release(ip)
    assert pool.used == {2}


def test_double_release_is_harmless():
    pool = IPPool()
    ip = pool.allocate()
    pool.release(ip)
    pool.release(ip)
    assert pool.allocate() == ip
