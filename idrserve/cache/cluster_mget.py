"""Cluster MGET without redis-py's cluster command machinery on the hot path.

A warm hit on a cluster cost about 1.3x the client CPU of one on a single server (27.9 vs
21.5 µs, docs/redis.md#cost-cluster-hits-against-one-server): `mget_nonatomic` builds a cluster
pipeline per call (command policies, slot lookup per key, per-node task, reply reordering)
around what is, for a burst of tiles of one image, one to four MGETs. Here the slot of each hash
tag is computed once and remembered, each primary's MGETs are written on one of its pooled
connections at once, and the replies read after all are written.

Only the path that works is short-cut: the first reply that is not a plain answer (MOVED, ASK,
TRYAGAIN, CLUSTERDOWN, a lost connection, a topology refresh pending) sends the whole lookup
through `mget_nonatomic`, whose redirect, retry and refresh handling then updates the slot map
that the next fast lookup reads.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

# The redis-py internals the fast path uses (present in 8.x; `redis[hiredis]>=5` is allowed).
_NEEDED = ("acquire_connection", "disconnect_if_needed", "parse_response", "release")

# Hash tags remembered; an image has TAG_SHARDS of them, so this is thousands of images.
_MAX_TAGS = 65_536


class ClusterMget:
    """Per-client state of the fast path: the slot of each hash tag seen, and counters."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._tag_slots: dict[str, int] = {}
        self.fast = 0  # lookups answered by the fast path
        self.fallbacks = 0  # lookups sent through mget_nonatomic after a fast-path miss
        # An older redis-py without these: every lookup takes the normal path.
        self.enabled = all(hasattr(ClusterNode, name) for name in _NEEDED) and hasattr(
            client, "_initialize"
        )

    def slot(self, key: str) -> int:
        """The key's cluster slot; CRC16 once per hash tag rather than once per key and call."""
        start = key.find("{")
        end = key.find("}", start + 1) if start >= 0 else -1
        if end <= start + 1:
            return key_slot(key.encode())  # no tag: the whole key is hashed
        tag = key[start + 1 : end]
        slot = self._tag_slots.get(tag)
        if slot is None:
            if len(self._tag_slots) >= _MAX_TAGS:
                self._tag_slots.clear()
            slot = self._tag_slots[tag] = key_slot(tag.encode())
        return slot

    async def mget(self, keys: list[str]) -> list[Any]:
        client = self._client
        # Not yet connected, or a refresh of the slot map is asked for: the normal path
        # runs it (a private flag of redis-py's RedisCluster, checked for in __init__).
        if not self.enabled or client._initialize:
            return await client.mget_nonatomic(keys)
        by_node: dict[str, tuple[ClusterNode, dict[int, list[int]]]] = {}
        try:
            manager = client.nodes_manager
            for i, key in enumerate(keys):
                slot = self.slot(key)
                node = manager.get_node_from_slot(slot)
                entry = by_node.get(node.name)
                if entry is None:
                    entry = by_node[node.name] = (node, {})
                entry[1].setdefault(slot, []).append(i)
        except RedisError:  # a slot without a primary (mid-failover)
            self.fallbacks += 1
            return await client.mget_nonatomic(keys)
        try:
            parts = await _node_mgets(list(by_node.values()), keys)
        except RedisError:
            self.fallbacks += 1
            return await client.mget_nonatomic(keys)
        self.fast += 1
        if len(parts) == 1:
            return list(parts[0][1])  # one slot: the reply is already in key order
        out: list[Any] = [None] * len(keys)
        for indexes, values in parts:
            for i, value in zip(indexes, values, strict=True):
                out[i] = value
        return out


async def _node_mgets(
    nodes: list[tuple[ClusterNode, dict[int, list[int]]]], keys: list[str]
) -> list[tuple[list[int], Any]]:
    """One MGET per slot: each node's written at once on one of its connections, every node's
    written before any reply is read (round trips in parallel, without a task per node).

    Every reply of a connection is read before an error is raised, so it goes back to the pool
    in step; one left with replies unread (a lost connection, a timeout) is disconnected.
    """
    taken: list[tuple[ClusterNode, Any, list[list[int]]]] = []
    unread: set[int] = set()
    replies: list[tuple[list[int], Any]] = []
    error: ResponseError | None = None
    try:
        for node, slots in nodes:
            connection = node.acquire_connection()
            groups = list(slots.values())
            taken.append((node, connection, groups))
            unread.add(id(connection))
            await node.disconnect_if_needed(connection)
            commands = [("MGET", *(keys[i] for i in indexes)) for indexes in groups]
            await connection.send_packed_command(connection.pack_commands(commands))
        for node, connection, groups in taken:
            for indexes in groups:
                try:
                    replies.append((indexes, await node.parse_response(connection, "MGET")))
                except ResponseError as exc:  # MOVED, ASK, TRYAGAIN, CLUSTERDOWN: read on
                    error = error or exc
            unread.discard(id(connection))
    finally:
        for node, connection, _ in taken:
            if id(connection) in unread:
                await connection.disconnect(nowait=True)
            node.release(connection)
    if error is not None:
        raise error
    return replies
