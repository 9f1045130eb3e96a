"""redis-py against hoardhaven's RESP listener, RESP2 and RESP3: the calls a service makes."""
import sys

import redis

port = int(sys.argv[1])
for protocol in (2, 3):
    r = redis.Redis(port=port, protocol=protocol, decode_responses=True)
    assert r.ping() is True
    r.flushdb()
    assert r.set("k", "v") is True
    assert r.get("k") == "v"
    assert r.set("k", "w", nx=True) is None
    assert r.incr("n") == 1 and r.incrby("n", 4) == 5
    assert r.incrbyfloat("f", 0.5) == 0.5
    r.mset({"a": "1", "b": "2"})
    assert r.mget(["a", "b", "zz"]) == ["1", "2", None]
    assert r.set("t", "x", ex=100) is True and 0 < r.ttl("t") <= 100
    assert sorted(r.scan_iter(match="[ab]")) == ["a", "b"]
    with r.pipeline(transaction=True) as p:
        p.set("x", "1").incr("x").get("x")
        assert p.execute() == [True, 2, "2"]
    assert r.delete("a", "b", "zz") == 2
    assert r.exists("k") == 1
    info = r.info()
    assert "redis_version" in info
    print(f"redis-py protocol {protocol}: ok")
