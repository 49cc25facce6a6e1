"""Cluster MGET without redis-py's cluster command machinery on the hot path.

A warm hit on a cluster cost about 1.3x the client CPU of one on a single server (27.9 vs
21.5 µs, docs/redis.md#cost-cluster-hits-against-one-server): `mget_nonatomic` builds a cluster
pipeline per call (command policies, slot lookup per key, per-node task, reply reordering)
around what is, for a burst of tiles of one image, one to four MGETs. Here the slot of each hash
tag is computed once and remembered, each primary's MGETs are written on one of its pooled
connections at once, and the replies read after all are written, with no timer per write or
read and no reordering of the replies.

Only the path that works is short-cut: the first reply that is not a plain answer (MOVED, ASK,
TRYAGAIN, CLUSTERDOWN, a lost connection, a topology refresh pending) sends the whole lookup
through `mget_nonatomic`, whose redirect, retry and refresh handling then updates the slot map
that the next fast lookup reads.
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError, ResponseError

# redis-py internals the fast path uses, as in redis-py 8.2 (pyproject pins <9): the pool
# methods of a ClusterNode, and RedisCluster's `_initialize` flag (with `_initialize_due`
# where present). Without any of the first two every lookup takes `mget_nonatomic`.
_NEEDED = ("acquire_connection", "disconnect_if_needed", "release")
# A connection's StreamWriter: written to directly, without redis-py's `wait_for` per write.
# Without it every write takes the public `send_packed_command` (slower, as correct).
_WRITER = "_writer"

# Hash tags remembered; an image has TAG_SHARDS of them, so this is thousands of images.
_MAX_TAGS = 65_536


class ClusterMget:
    """Per-client state of the fast path: the slot of each hash tag seen, and counters."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        # Key text up to the end of its hash tag ("idrs:r:{1002.3") -> slot.
        self._head_slots: dict[str, int] = {}
        self.fast = 0  # lookups answered by the fast path
        self.fallbacks = 0  # lookups sent through mget_nonatomic after a fast-path miss
        # An older redis-py without these: every lookup takes the normal path.
        self.enabled = all(hasattr(ClusterNode, name) for name in _NEEDED) and hasattr(
            client, "_initialize"
        )

    def _refresh_due(self) -> bool:
        """Whether the normal path has a slot-map refresh to run now (private redis-py
        API, checked for in __init__; an older client without `_initialize_due` refreshes
        whenever `_initialize` is set)."""
        client = self._client
        due = getattr(client, "_initialize_due", None)
        return bool(due()) if due is not None else bool(client._initialize)

    def slot(self, key: str) -> int:
        """The key's cluster slot; CRC16 once per hash tag rather than once per key and call.

        Remembered by the key's text up to the first `}`: when that text holds a `{` followed
        by at least one character, those characters are the tag, so every key with the same
        head is in the same slot. Any other key is hashed whole, every time (none of ours).
        """
        head = key.partition("}")[0]
        slot = self._head_slots.get(head)
        if slot is not None:
            return slot
        start = head.find("{")
        if start < 0 or start == len(head) - 1 or len(head) == len(key):
            return key_slot(key.encode())
        if len(self._head_slots) >= _MAX_TAGS:
            self._head_slots.clear()
        slot = self._head_slots[head] = key_slot(head[start + 1 :].encode())
        return slot

    async def mget(self, keys: list[str]) -> list[tuple[list[str], list[Any]]]:
        """The values of `keys`, as (keys, their values) groups: one group per slot, so that
        no per-key reordering is needed to hand them back."""
        client = self._client
        # Not yet connected, or a refresh of the slot map is due: the normal path runs it.
        # A refresh asked for but not due yet (redis-py spaces them out, longer after ones
        # that failed, as during a failover) leaves the current slot map serving, and so
        # does this path: keyed on the raw `_initialize` flag instead, lookups stayed on
        # the slow path after a failover until some later command ran the refresh.
        if not self.enabled or self._refresh_due():
            return [(keys, await client.mget_nonatomic(keys))]
        by_slot: dict[int, list[str]] = {}
        heads = self._head_slots
        for key in keys:
            slot = heads.get(key.partition("}")[0])
            if slot is None:
                slot = self.slot(key)
            group = by_slot.get(slot)
            if group is None:
                by_slot[slot] = [key]
            else:
                group.append(key)
        by_node: dict[str, tuple[ClusterNode, list[list[str]]]] = {}
        try:
            manager = client.nodes_manager
            for slot, group in by_slot.items():
                node = manager.get_node_from_slot(slot)
                entry = by_node.get(node.name)
                if entry is None:
                    by_node[node.name] = (node, [group])
                else:
                    entry[1].append(group)
        except RedisError:  # a slot without a primary (mid-failover)
            self.fallbacks += 1
            return [(keys, await client.mget_nonatomic(keys))]
        try:
            parts = await _node_mgets(list(by_node.values()))
        except RedisError:
            self.fallbacks += 1
            return [(keys, await client.mget_nonatomic(keys))]
        self.fast += 1
        return parts


async def _node_mgets(
    nodes: list[tuple[ClusterNode, list[list[str]]]],
) -> list[tuple[list[str], list[Any]]]:
    """One MGET per slot: each node's written at once on one of its connections, every node's
    written before any reply is read (round trips in parallel, without a task per node).

    No timer per write or read (redis-py's own send wraps each write in `wait_for`, a task on
    Python 3.11, and each read in a timeout scope): the caller's one `redis_timeout_s` scope
    bounds the whole lookup. Every reply of a connection is read before an error is raised,
    so it goes back to the pool in step; one left with replies unread (a lost connection, a
    timeout) is disconnected.
    """
    taken: list[tuple[ClusterNode, Any, list[list[str]]]] = []
    read = 0  # connections of `taken` whose replies have all been read
    replies: list[tuple[list[str], list[Any]]] = []
    error: ResponseError | None = None
    try:
        for node, groups in nodes:
            connection = node.acquire_connection()
            taken.append((node, connection, groups))
            await node.disconnect_if_needed(connection)
            packed = connection.pack_commands([("MGET", *group) for group in groups])
            writer = getattr(connection, _WRITER, None)
            if writer is None or writer.transport.is_closing():
                await connection.send_packed_command(packed)  # connects first
                continue
            try:
                writer.writelines(packed)
                if writer.transport.get_write_buffer_size():
                    await writer.drain()  # not all sent at once: wait for the socket
            except (OSError, TypeError, AttributeError) as exc:
                raise ConnectionError(f"writing to {node.name}: {exc!r}") from exc
        for _node, connection, groups in taken:
            for group in groups:
                try:
                    replies.append((group, await connection.read_response(timeout=math.inf)))
                except ResponseError as exc:  # MOVED, ASK, TRYAGAIN, CLUSTERDOWN: read on
                    error = error or exc
            read += 1
    finally:
        for i, (node, connection, _) in enumerate(taken):
            if i >= read:
                await connection.disconnect(nowait=True)
            node.release(connection)
    if error is not None:
        raise error
    return replies
