"""The shared storage servers listen on loopback only, and the fixtures hand out fresh, empty stores."""

from __future__ import annotations

import psutil

from cloudprof.storage import open_store


def _listening(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_fake_gcs_listens_on_loopback_only(fake_gcs):
    assert fake_gcs.endpoint_url.startswith("http://127.0.0.1:")
    assert _listening(fake_gcs.process.pid) == {"127.0.0.1"}


def test_moto_server_listens_on_loopback_only(moto_server):
    host, _ = moto_server.server.get_host_and_port()
    assert host == "127.0.0.1" and moto_server.endpoint_url.startswith("http://127.0.0.1:")


def test_fault_proxy_listens_on_loopback_only(fault_proxy):
    assert fault_proxy.endpoint_url.startswith("http://127.0.0.1:")


def test_every_store_starts_empty(store_url):
    store = open_store(store_url)
    assert list(store.list()) == []
    store.put("marker", b"x")


def test_and_is_fresh_for_the_next_test(store_url):
    assert list(open_store(store_url).list()) == []
