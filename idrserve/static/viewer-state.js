// idrserve viewer: the view state and the URLs made from it (pure functions, no DOM).
//
// The state is { z, t, greyscale, projection, channels: [{ active, start, end, colour, lut }],
// view: { x, y, zoom } | null }. It is written to the page's URL fragment so that a link
// reproduces the view:
//
//   #z=4&t=0&c=1|100:2500$0000FF,-2|80:1200$fire.lut&m=c&p=intmax&x=256&y=256&zoom=1.5
//
// `c`, `m` and `p` are OMERO.web's webgateway grammar (docs/webgateway.md#c-channels); z and t
// are 0-based; x, y are the centre in full-resolution pixels and zoom is screen pixels per
// image pixel, so a link shows the same region whatever the window size.
(function (ns) {
  "use strict";

  const QUALITY = "0.9";
  const PROJECTIONS = ["intmax", "intmean", "intsum"];

  function fmt(n) {
    // Integers stay integers; floats keep enough digits to round-trip the window.
    return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(7)));
  }

  function channelParam(channels) {
    // "1|0:255$FF0000,-2|…": every channel, "-" for an inactive one, its LUT or its colour.
    return channels
      .map(function (ch, i) {
        const colour = ch.lut || ch.colour;
        return (ch.active ? "" : "-") + (i + 1) + "|" + fmt(ch.start) + ":" + fmt(ch.end) + "$" + colour;
      })
      .join(",");
  }

  // The query of a webgateway render URL for the state (tiles, render_image).
  function renderQuery(state) {
    return "c=" + encodeURIComponent(channelParam(state.channels)) + "&m=" + (state.greyscale ? "g" : "c") + "&q=" + QUALITY;
  }

  // A IIIF identifier carrying the same settings (docs/iiif.md#identifiers); a projection
  // covers every plane, so it names no z.
  function iiifIdentifier(imageId, state) {
    const parts = [String(imageId), "c=" + channelParam(state.channels).replace(/\|/g, "%7C"), "m=" + (state.greyscale ? "g" : "c")];
    if (state.projection) {
      parts.push("p=" + state.projection, "t=" + state.t);
    } else {
      parts.push("z=" + state.z, "t=" + state.t);
    }
    parts.push("q=" + QUALITY);
    return parts.join(";");
  }

  // One `c=` entry: [-]index[|start:end][$colour-or-lut]; null when malformed.
  function parseChannel(text) {
    const m = /^(-)?(\d{1,4})(?:\|(-?[\d.eE+-]+):(-?[\d.eE+-]+))?(?:\$([0-9A-Za-z_.+-]{1,64}))?$/.exec(text);
    if (!m) {
      return null;
    }
    const out = { index: Number(m[2]) - 1, active: !m[1] };
    if (m[3] !== undefined) {
      const start = Number(m[3]);
      const end = Number(m[4]);
      if (Number.isFinite(start) && Number.isFinite(end)) {
        out.start = start;
        out.end = end;
      }
    }
    if (m[5] !== undefined) {
      if (/^[0-9A-Fa-f]{6}$/.test(m[5])) {
        out.colour = m[5].toUpperCase();
      } else if (/\.lut$/i.test(m[5])) {
        out.lut = m[5];
      }
    }
    return out;
  }

  function compactEncode(value) {
    // Readable fragments: keep the grammar's own punctuation unescaped.
    return encodeURIComponent(value).replace(/%7C/gi, "|").replace(/%24/g, "$").replace(/%3A/gi, ":").replace(/%2C/gi, ",");
  }

  // The fragment (without "#") for a state.
  function formatHash(state) {
    const pairs = [
      ["z", String(state.z)],
      ["t", String(state.t)],
      ["c", channelParam(state.channels)],
      ["m", state.greyscale ? "g" : "c"],
    ];
    if (state.projection) {
      pairs.push(["p", state.projection]);
    }
    if (state.view) {
      pairs.push(["x", fmt(Number(state.view.x.toFixed(1)))], ["y", fmt(Number(state.view.y.toFixed(1)))], ["zoom", fmt(Number(state.view.zoom.toPrecision(6)))]);
    }
    return pairs
      .map(function (kv) {
        return kv[0] + "=" + compactEncode(kv[1]);
      })
      .join("&");
  }

  // Apply a fragment to a state made from the image's defaults. Anything out of range or
  // malformed is ignored, so a stale or mistyped link still opens the image.
  function applyHash(hash, state, data) {
    const params = new URLSearchParams(hash.replace(/^#/, ""));
    const int = function (name, size) {
      const v = params.get(name);
      if (v === null || !/^\d{1,9}$/.test(v)) {
        return null;
      }
      const n = Number(v);
      return n < size ? n : null;
    };
    const z = int("z", data.size.z);
    if (z !== null) {
      state.z = z;
    }
    const t = int("t", data.size.t);
    if (t !== null) {
      state.t = t;
    }
    const c = params.get("c");
    if (c !== null) {
      const seen = {};
      c.split(",").forEach(function (entry) {
        const parsed = parseChannel(entry.trim());
        if (parsed === null || parsed.index < 0 || parsed.index >= state.channels.length) {
          return;
        }
        const ch = state.channels[parsed.index];
        seen[parsed.index] = true;
        ch.active = parsed.active;
        if (parsed.start !== undefined && parsed.start < parsed.end) {
          ch.start = parsed.start;
          ch.end = parsed.end;
        }
        if (parsed.colour) {
          ch.colour = parsed.colour;
          ch.lut = null;
        } else if (parsed.lut) {
          ch.lut = parsed.lut;
        }
      });
      // As on the webgateway, a channel that `c` leaves out is off.
      state.channels.forEach(function (ch, i) {
        if (!seen[i]) {
          ch.active = false;
        }
      });
    }
    const m = params.get("m");
    if (m === "g" || m === "c") {
      state.greyscale = m === "g";
    }
    const p = params.get("p");
    if (p !== null) {
      state.projection = PROJECTIONS.indexOf(p) >= 0 && data.size.z > 1 ? p : "";
    }
    const x = Number(params.get("x"));
    const y = Number(params.get("y"));
    const zoom = Number(params.get("zoom"));
    if (params.has("x") && params.has("y") && params.has("zoom") && Number.isFinite(x) && Number.isFinite(y) && zoom > 0 && Number.isFinite(zoom)) {
      state.view = { x: x, y: y, zoom: zoom };
    }
    return state;
  }

  // The state the image's own settings give (what render_image answers without parameters).
  function defaultState(data) {
    return {
      z: data.rdefs.defaultZ,
      t: data.rdefs.defaultT,
      greyscale: data.rdefs.model === "greyscale",
      projection: "",
      view: null,
      channels: data.channels.map(function (ch) {
        return {
          label: ch.label,
          active: ch.active,
          colour: ch.color,
          lut: ch.lut || null,
          start: ch.window.start,
          end: ch.window.end,
          min: ch.window.min,
          max: ch.window.max,
        };
      }),
    };
  }

  // A scale bar of at most `maxPx` screen pixels (and at least 40 % of it): the longest
  // 1, 2 or 5 × 10^n length that fits. Returns its length in µm and its label.
  function scaleBar(micronsPerPixel, maxPx) {
    const raw = micronsPerPixel * maxPx;
    const unit = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [5, 2, 1].find(function (s) {
      return s * unit <= raw * (1 + 1e-9);
    });
    const um = step * unit;
    let label;
    if (um >= 1000) {
      label = fmt(Number((um / 1000).toPrecision(3))) + " mm";
    } else if (um >= 1) {
      label = fmt(Number(um.toPrecision(3))) + " µm";
    } else {
      label = fmt(Number((um * 1000).toPrecision(3))) + " nm";
    }
    return { microns: um, label: label };
  }

  // Values of a little-endian raw region (`format=raw`): X-Array-Dtype is numpy's `<u2`, `<f4`…
  function readRaw(buffer, dtype) {
    const m = /^[<|]([uifb])(\d)$/.exec(dtype || "");
    if (!m) {
      return null;
    }
    const kind = m[1];
    const size = Number(m[2]);
    const view = new DataView(buffer);
    const getters = {
      u1: view.getUint8,
      u2: view.getUint16,
      u4: view.getUint32,
      u8: view.getBigUint64,
      i1: view.getInt8,
      i2: view.getInt16,
      i4: view.getInt32,
      i8: view.getBigInt64,
      f4: view.getFloat32,
      f8: view.getFloat64,
      b1: view.getUint8,
    };
    const get = getters[kind + size];
    if (!get) {
      return null;
    }
    const out = [];
    for (let off = 0; off + size <= buffer.byteLength; off += size) {
      out.push(Number(get.call(view, off, true)));
    }
    return out;
  }

  ns.fmt = fmt;
  ns.channelParam = channelParam;
  ns.renderQuery = renderQuery;
  ns.iiifIdentifier = iiifIdentifier;
  ns.parseChannel = parseChannel;
  ns.formatHash = formatHash;
  ns.applyHash = applyHash;
  ns.defaultState = defaultState;
  ns.scaleBar = scaleBar;
  ns.readRaw = readRaw;
  ns.PROJECTIONS = PROJECTIONS;
})((window.idrserveViewer = window.idrserveViewer || {}));
