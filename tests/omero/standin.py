"""A stand-in OMERO server: a real Ice server built from omero-py's generated interfaces.

No OMERO.server can run on these machines, so the worker is tested against this process. It
speaks Ice on a real socket with the same slice-generated classes OMERO uses, so the worker's
real `omero.client` logs in through it, and byte order, level numbering and Ice exceptions cross
a real wire:

- ``OMERO.Glacier2/router`` implements Glacier2::Router (and Ice::Router): `createSession`
  checks the password and returns a ServiceFactory proxy; `getClientProxy` points routed calls
  back at this adapter, which hosts every session object, so nothing needs forwarding.
- ServiceFactory: `getQueryService`, `getPixelsService`, `createRawPixelsStore`, `keepAlive`,
  `setCallback`, `destroy`.
- IQuery.findByQuery (the worker's one image query, answered from the data directory),
  IPixels.retrieveRndSettingsFor, and RawPixelsStore's pyramid calls with OMERO's numbering
  (`setResolutionLevel(n - 1)` = full resolution) and big-endian `getTile` bytes.
- Expired sessions vanish from the adapter, so their proxies raise ObjectNotExistException as
  they do behind a real Glacier2 router.

A control HTTP server (``--control-port``) lets tests inject per-call latency, expire sessions
and read counters (calls per operation, maximum concurrent getTile calls, logins).

Data (``--data DIR``): ``<id>.json`` image facts plus ``<id>_<level>.npy`` arrays shaped
(t, c, z, y, x), level 0 = full resolution, written by tests/omero/conftest.py.

Runs under the Python 3.10 virtualenv of scripts/setup_omero.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import Glacier2
import Ice
import numpy as np
import omero
import omero.api
import omero.clients
import omero.model
import omero.rtypes
from omero import ObjectFactoryRegistrar
from omero.rtypes import rbool, rdouble, rint, rlong, rstring

DTYPES = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "float": "f4",
    "double": "f8",
}


class State:
    """Everything the control server reads and changes."""

    def __init__(self, data: Path, user: str, password: str) -> None:
        self.data = data
        self.user = user
        self.password = password
        self.lock = threading.Lock()
        self.latency_s = 0.0
        self.sessions: dict[str, list[Ice.Identity]] = {}
        self.calls: dict[str, int] = {}
        self.tiles_in_flight = 0
        self.max_tiles_in_flight = 0
        self.logins = 0
        self.expired = 0
        self._facts: dict[int, dict[str, Any]] = {}
        self._levels: dict[int, list[np.ndarray]] = {}

    def facts(self, image_id: int) -> dict[str, Any] | None:
        if image_id not in self._facts:
            path = self.data / f"{image_id}.json"
            if not path.exists():
                return None
            facts = json.loads(path.read_text())
            levels = []
            while (self.data / f"{image_id}_{len(levels)}.npy").exists():
                levels.append(np.load(self.data / f"{image_id}_{len(levels)}.npy", mmap_mode="r"))
            self._facts[image_id], self._levels[image_id] = facts, levels
        return self._facts[image_id]

    def levels_for_pixels(self, pixels_id: int) -> tuple[dict[str, Any], list[np.ndarray]] | None:
        for path in self.data.glob("*.json"):
            image_id = int(path.stem)
            facts = self.facts(image_id)
            if facts is not None and facts["pixelsId"] == pixels_id:
                return facts, self._levels[image_id]
        return None

    def count(self, op: str) -> None:
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": dict(self.calls),
                "getTile": self.calls.get("getTile", 0),
                "maxConcurrentTiles": self.max_tiles_in_flight,
                "logins": self.logins,
                "sessions": len(self.sessions),
                "expired": self.expired,
                "latency_ms": self.latency_s * 1000,
            }

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.max_tiles_in_flight = 0
            self.logins = 0
            self.expired = 0


STATE: State


def amd_void(fn: Any) -> Any:
    """`amd` for operations without a result (`ice_response()` with no argument)."""
    wrapper = amd(fn)
    wrapper.void = True
    return wrapper


def amd(fn: Any) -> Any:
    """OMERO's services are AMD (`_async` servants): answer through the callback.

    A None result is a null object/proxy, never "no result": answering a valued operation
    with `ice_response()` crashes IcePy, so void operations are marked by `amd_void`.
    """

    tile = fn.__name__ == "getTile"

    def wrapper(self: Any, cb: Any, *args: Any) -> None:
        STATE.count(fn.__name__)
        if tile:  # the injected latency counts as time in flight
            with STATE.lock:
                STATE.tiles_in_flight += 1
                STATE.max_tiles_in_flight = max(STATE.max_tiles_in_flight, STATE.tiles_in_flight)
        try:
            if STATE.latency_s:
                time.sleep(STATE.latency_s)
            result = fn(self, *args)
        except Exception as exc:
            cb.ice_exception(exc)
            return
        finally:
            if tile:
                with STATE.lock:
                    STATE.tiles_in_flight -= 1
        if getattr(wrapper, "void", False):
            cb.ice_response()
        else:
            cb.ice_response(result)

    wrapper.__name__ = fn.__name__ + "_async"
    wrapper.amd = True  # type: ignore[attr-defined]
    return wrapper


def servant(cls: Any) -> Any:
    """Install each `@amd` method under the `<name>_async` name Ice dispatches to."""
    for name, value in list(vars(cls).items()):
        if getattr(value, "amd", False):
            setattr(cls, name + "_async", value)
    return cls


def _length(spec: list[Any] | None) -> omero.model.LengthI | None:
    if spec is None:
        return None
    return omero.model.LengthI(float(spec[0]), str(spec[1]))


def _image(facts: dict[str, Any]) -> omero.model.ImageI:
    """The loaded graph the worker's query fetches (pixels, type, channels, stats)."""
    img = omero.model.ImageI(facts["id"], True)
    img.setName(rstring(facts["name"]))
    img.setDescription(rstring(facts.get("description", "")))
    img.getDetails().setOwner(omero.model.ExperimenterI(facts["ownerId"], False))
    external = facts.get("externalInfo")
    if external is not None:  # an NGFF-backed image (omero-zarr-pixel-buffer's link)
        info = omero.model.ExternalInfoI(facts["id"], True)
        info.setEntityType(rstring(external["entityType"]))
        info.setEntityId(rlong(external["entityId"]))
        info.setLsid(rstring(external["lsid"]))
        img.getDetails().setExternalInfo(info)
    pix = omero.model.PixelsI(facts["pixelsId"], True)
    for key in ("sizeX", "sizeY", "sizeZ", "sizeC", "sizeT"):
        getattr(pix, "set" + key[0].upper() + key[1:])(rint(facts[key]))
    ptype = omero.model.PixelsTypeI(1, True)
    ptype.setValue(rstring(facts["pixelsType"]))
    pix.setPixelsType(ptype)
    phys = facts.get("physicalSize", {})
    pix.setPhysicalSizeX(_length(phys.get("x")))
    pix.setPhysicalSizeY(_length(phys.get("y")))
    pix.setPhysicalSizeZ(_length(phys.get("z")))
    for i, spec in enumerate(facts["channels"]):
        ch = omero.model.ChannelI(facts["pixelsId"] * 100 + i, True)
        if spec.get("color") is not None:
            r, g, b, a = spec["color"]
            ch.setRed(rint(r))
            ch.setGreen(rint(g))
            ch.setBlue(rint(b))
            ch.setAlpha(rint(a))
        lc = omero.model.LogicalChannelI(facts["pixelsId"] * 100 + i, True)
        if spec.get("name") is not None:
            lc.setName(rstring(spec["name"]))
        lc.setEmissionWave(_length(spec.get("emissionWave")))
        ch.setLogicalChannel(lc)
        if spec.get("statsMin") is not None:
            stats = omero.model.StatsInfoI(facts["pixelsId"] * 100 + i, True)
            stats.setGlobalMin(rdouble(spec["statsMin"]))
            stats.setGlobalMax(rdouble(spec["statsMax"]))
            ch.setStatsInfo(stats)
        pix.addChannel(ch)
    img.addPixels(pix)
    return img


def _rdef(facts: dict[str, Any]) -> omero.model.RenderingDefI | None:
    spec = facts.get("rdef")
    if spec is None:
        return None
    rdef = omero.model.RenderingDefI(facts["pixelsId"] + 5, True)
    rdef.setVersion(rint(spec.get("version", 1)))
    model = omero.model.RenderingModelI(1, True)
    model.setValue(rstring(spec["model"]))
    rdef.setModel(model)
    rdef.setDefaultZ(rint(spec["defaultZ"]))
    rdef.setDefaultT(rint(spec["defaultT"]))
    for i, ch in enumerate(spec["channels"]):
        cb = omero.model.ChannelBindingI(facts["pixelsId"] * 10 + i, True)
        cb.setActive(rbool(ch["active"]))
        cb.setInputStart(rdouble(ch["start"]))
        cb.setInputEnd(rdouble(ch["end"]))
        r, g, b, a = ch["color"]
        cb.setRed(rint(r))
        cb.setGreen(rint(g))
        cb.setBlue(rint(b))
        cb.setAlpha(rint(a))
        family = omero.model.FamilyI(1, True)
        family.setValue(rstring(ch.get("family", "linear")))
        cb.setFamily(family)
        cb.setCoefficient(rdouble(ch.get("coefficient", 1.0)))
        cb.setNoiseReduction(rbool(False))
        if ch.get("lut"):
            cb.setLookupTable(rstring(ch["lut"]))
        if ch.get("inverted"):
            ctx = omero.model.ReverseIntensityContextI(i + 1, True)
            ctx.setReverse(rbool(True))
            cb.addCodomainMapContext(ctx)
        rdef.addChannelBinding(cb)
    return rdef


@servant
class QueryI(omero.api.IQuery):
    @amd
    def findByQuery(self, query: str, params: Any, current: Any = None) -> Any:
        if not query.startswith("select i from Image i"):
            raise omero.ApiUsageException(message=f"stand-in cannot answer: {query[:80]}")
        image_id = params.map["id"].getValue()
        facts = STATE.facts(int(image_id))
        return None if facts is None else _image(facts)


@servant
class PixelsI(omero.api.IPixels):
    @amd
    def retrieveRndSettingsFor(self, pixels_id: int, user_id: int, current: Any = None) -> Any:
        found = STATE.levels_for_pixels(pixels_id)
        if found is None:
            raise omero.ValidationException(message=f"no pixels {pixels_id}")
        facts = found[0]
        return _rdef(facts) if user_id == facts["ownerId"] else None


@servant
class RawPixelsStoreI(omero.api.RawPixelsStore):
    def __init__(self) -> None:
        self.facts: dict[str, Any] | None = None
        self.levels: list[np.ndarray] = []
        self.level = 0  # OMERO numbering: len(levels) - 1 = full resolution

    def _need(self) -> dict[str, Any]:
        if self.facts is None:
            raise omero.ApiUsageException(message="setPixelsId not called")
        return self.facts

    @amd_void
    def setPixelsId(self, pixels_id: int, bypass: bool, current: Any = None) -> None:
        found = STATE.levels_for_pixels(pixels_id)
        if found is None:
            raise omero.ValidationException(message=f"no pixels {pixels_id}")
        self.facts, self.levels = found
        self.level = len(self.levels) - 1

    @amd
    def getResolutionLevels(self, current: Any = None) -> int:
        self._need()
        return len(self.levels)

    @amd
    def getResolutionDescriptions(self, current: Any = None) -> list[Any]:
        self._need()
        return [
            omero.api.ResolutionDescription(int(a.shape[-1]), int(a.shape[-2])) for a in self.levels
        ]

    @amd_void
    def setResolutionLevel(self, level: int, current: Any = None) -> None:
        self._need()
        if not 0 <= level < len(self.levels):
            raise omero.ApiUsageException(message=f"resolution level {level} out of range")
        self.level = level

    @amd
    def getResolutionLevel(self, current: Any = None) -> int:
        return self.level

    @amd
    def getTileSize(self, current: Any = None) -> list[int]:
        facts = self._need()
        index = len(self.levels) - 1 - self.level
        arr = self.levels[index]
        w, h = facts.get("tileSizes", [facts["tileSize"]] * len(self.levels))[index]
        return [min(w, int(arr.shape[-1])), min(h, int(arr.shape[-2]))]

    @amd
    def getTile(
        self, z: int, c: int, t: int, x: int, y: int, w: int, h: int, current: Any = None
    ) -> bytes:
        facts = self._need()
        arr = self.levels[len(self.levels) - 1 - self.level]
        _, size_c, size_z, size_y, size_x = arr.shape
        if not (0 <= z < size_z and 0 <= c < size_c and 0 <= t < arr.shape[0]):
            raise omero.ApiUsageException(message=f"plane {z},{c},{t} out of range")
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > size_x or y + h > size_y:
            raise omero.ApiUsageException(message=f"tile {x},{y},{w},{h} out of bounds")
        big = np.dtype(">" + DTYPES[facts["pixelsType"]])
        return np.ascontiguousarray(arr[t, c, z, y : y + h, x : x + w], dtype=big).tobytes()

    @amd_void
    def close(self, current: Any = None) -> None:
        if current is not None:
            with contextlib.suppress(Ice.NotRegisteredException):
                current.adapter.remove(current.id)


class ServiceFactoryI(omero.api.ServiceFactory):
    def __init__(self, session: str) -> None:
        self.session = session
        self.services: dict[str, Any] = {}

    def _service(self, name: str, servant: Any, current: Any, cast: Any) -> Any:
        identity = Ice.Identity(f"{name}-{uuid.uuid4().hex[:8]}", self.session)
        current.adapter.add(servant, identity)
        with STATE.lock:
            STATE.sessions.setdefault(self.session, []).append(identity)
        return cast.uncheckedCast(current.adapter.createProxy(identity))

    def getQueryService(self, current: Any = None) -> Any:
        STATE.count("getQueryService")
        return self._service("IQuery", QueryI(), current, omero.api.IQueryPrx)

    def getPixelsService(self, current: Any = None) -> Any:
        STATE.count("getPixelsService")
        return self._service("IPixels", PixelsI(), current, omero.api.IPixelsPrx)

    def createRawPixelsStore(self, current: Any = None) -> Any:
        STATE.count("createRawPixelsStore")
        return self._service(
            "RawPixelsStore", RawPixelsStoreI(), current, omero.api.RawPixelsStorePrx
        )

    def setCallback(self, callback: Any, current: Any = None) -> None:
        STATE.count("setCallback")

    def keepAlive(self, proxy: Any, current: Any = None) -> bool:
        STATE.count("keepAlive")
        return True

    def keepAllAlive(self, proxies: Any, current: Any = None) -> int:
        return 0

    def closeOnDestroy(self, current: Any = None) -> None:
        pass

    def detachOnDestroy(self, current: Any = None) -> None:
        pass

    def destroy(self, current: Any = None) -> None:
        drop_session(current.adapter, self.session)


def drop_session(adapter: Any, session: str) -> None:
    with STATE.lock:
        identities = STATE.sessions.pop(session, [])
    for identity in identities:
        with contextlib.suppress(Ice.NotRegisteredException):
            adapter.remove(identity)


@servant
class RouterI(Glacier2.Router):
    """Glacier2's router interface, serving the sessions from this same adapter."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def getClientProxy(self, current: Any = None) -> Any:
        # Routed calls go to this adapter's endpoints (Ice 3.6: no routing-table flag).
        return self.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/client"))

    def getServerProxy(self, current: Any = None) -> Any:
        return self.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/server"))

    def addProxies(self, proxies: Any, current: Any = None) -> list[Any]:
        return []

    def getCategoryForClient(self, current: Any = None) -> str:
        return "client-" + uuid.uuid4().hex[:8]

    @amd
    def createSession(self, user: str, password: str, current: Any = None) -> Any:
        if user != STATE.user or password != STATE.password:
            raise Glacier2.PermissionDeniedException("Password check failed")
        session = str(uuid.uuid4())
        identity = Ice.Identity(session, "")
        current.adapter.add(ServiceFactoryI(session), identity)
        with STATE.lock:
            STATE.sessions[session] = [identity]
            STATE.logins += 1
        return Glacier2.SessionPrx.uncheckedCast(current.adapter.createProxy(identity))

    def createSessionFromSecureConnection(self, current: Any = None) -> Any:
        raise Glacier2.PermissionDeniedException("not supported by the stand-in")

    @amd_void
    def refreshSession(self, current: Any = None) -> None:
        pass

    def destroySession(self, current: Any = None) -> None:
        session = current.ctx.get("omero.session") if current is not None else None
        if session:
            drop_session(current.adapter, session)

    def getSessionTimeout(self, current: Any = None) -> int:
        return 600

    def getACMTimeout(self, current: Any = None) -> int:
        return 0


class ControlHandler(BaseHTTPRequestHandler):
    adapter: Any = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(STATE.stats())

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/latency":
            STATE.latency_s = float(query.get("ms", "0")) / 1000
        elif url.path == "/expire":
            with STATE.lock:
                sessions = list(STATE.sessions)
                STATE.expired += len(sessions)
            for session in sessions:
                drop_session(ControlHandler.adapter, session)
        elif url.path == "/reset":
            STATE.reset()
        self._reply(STATE.stats())


def main() -> int:
    global STATE
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--user", default="public")
    p.add_argument("--password", default="public")
    p.add_argument("--latency-ms", type=float, default=0.0)
    args = p.parse_args()
    STATE = State(args.data, args.user, args.password)
    STATE.latency_s = args.latency_ms / 1000

    init = Ice.InitializationData()
    init.properties = Ice.createProperties()
    init.properties.setProperty("Ice.ThreadPool.Server.Size", "48")
    init.properties.setProperty("Ice.ThreadPool.Server.SizeMax", "96")
    init.properties.setProperty("Ice.MessageSizeMax", "262144")
    init.properties.setProperty("Ice.ACM.Server.Timeout", "0")
    ic = Ice.initialize(sys.argv[:1], init)
    # Incoming omero.sys.Parameters carry rtypes: register their factories as a client does.
    ObjectFactoryRegistrar.registerObjectFactory(ic, None)
    for factory in omero.rtypes.ObjectFactories.values():
        factory.register(ic)
    adapter = ic.createObjectAdapterWithEndpoints("OMERO", f"tcp -h 127.0.0.1 -p {args.port}")
    adapter.add(RouterI(adapter), Ice.stringToIdentity("OMERO.Glacier2/router"))
    adapter.activate()
    port = adapter.getEndpoints()[0].getInfo().port

    ControlHandler.adapter = adapter
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), ControlHandler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"READY {port} {control.server_address[1]}", flush=True)
    try:
        ic.waitForShutdown()
    except KeyboardInterrupt:
        pass
    finally:
        control.shutdown()
        ic.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
