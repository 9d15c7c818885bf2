"""Redis Streams adapter: the bus between processes (`RedisStreamsBus`) and its payload codec."""

from quantlab.adapters.redis.bus import RedisStreamsBus, RedisSubscription

__all__ = ["RedisStreamsBus", "RedisSubscription"]
