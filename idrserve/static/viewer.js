// idrserve's built-in viewer: OpenSeadragon over OMERO.web webgateway tiles.
//
// The image's metadata comes from /webgateway/imgData/{id}/; every tile is
// /webgateway/render_image_region/{id}/{z}/{t}/?tile={level},{col},{row},{w},{h}&c=…&m=…&q=…
// where webgateway level 0 is full resolution (OpenSeadragon's level numbering runs the
// other way). Each control change builds a new tile source with new URLs; the old image
// stays on screen until the new one has finished loading, then it is removed.
//
// Every URL starts with <body data-base>, the path prefix the server is reached under ("" at
// the root, "/idr" behind a proxy serving it under /idr/), so the page works under any prefix.
//
// For tests and scripting, window.idrViewer exposes the viewer and the state, and
// <body data-state> is "loading", "loaded" (every visible tile drawn) or "error".
(function () {
  "use strict";

  const body = document.body;
  const imageId = body.dataset.imageId;
  const base = body.dataset.base || "";
  const statusEl = document.getElementById("status");
  const QUALITY = "0.9";
  const FALLBACK_TILE = 512;

  function setStatus(text, state) {
    statusEl.textContent = text;
    if (state) {
      body.dataset.state = state;
    }
  }

  function fail(err) {
    setStatus("error: " + (err && err.message ? err.message : String(err)), "error");
  }

  function hexColour(value) {
    // "#00ff00" <-> "00FF00" (webgateway's form)
    return value.replace(/^#/, "").toUpperCase();
  }

  function fmt(n) {
    // Integers stay integers; floats keep enough digits to round-trip the window.
    return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(7)));
  }

  // The number of pyramid levels OpenSeadragon may use: levels must halve (the tile source
  // derives every level's scale from 2^-n); any other pyramid is shown from full resolution.
  function usableLevels(data) {
    const n = data.levels || 1;
    const scaling = data.zoomLevelScaling || {};
    for (let i = 1; i < n; i++) {
      const s = scaling[String(i)];
      if (typeof s !== "number" || Math.abs(s * Math.pow(2, i) - 1) > 0.02) {
        return i;
      }
    }
    return n;
  }

  function levelSize(data, wgLevel) {
    const res = data.resolutions && data.resolutions[String(wgLevel)];
    if (res) {
      return { x: res.sizeX, y: res.sizeY };
    }
    const f = Math.pow(2, wgLevel);
    return { x: Math.ceil(data.size.width / f), y: Math.ceil(data.size.height / f) };
  }

  function renderQuery(state) {
    const c = state.channels
      .map(function (ch, i) {
        const colour = ch.lut && !ch.colourChanged ? ch.lut : ch.colour;
        return (ch.active ? "" : "-") + (i + 1) + "|" + fmt(ch.start) + ":" + fmt(ch.end) + "$" + colour;
      })
      .join(",");
    return "c=" + encodeURIComponent(c) + "&m=" + (state.greyscale ? "g" : "c") + "&q=" + QUALITY;
  }

  function makeTileSource(data, state) {
    const OSD = window.OpenSeadragon;
    const width = data.size.width;
    const height = data.size.height;
    const tw = data.tile_size ? data.tile_size.width : Math.min(FALLBACK_TILE, width);
    const th = data.tile_size ? data.tile_size.height : Math.min(FALLBACK_TILE, height);
    const maxLevel = Math.max(0, Math.ceil(Math.log2(Math.max(width, height))));
    const levels = usableLevels(data);
    const minLevel = Math.max(0, maxLevel - (levels - 1));
    const query = renderQuery(state);
    const tilePath = base + "/webgateway/render_image_region/" + imageId + "/" + state.z + "/" + state.t + "/";
    const source = new OSD.TileSource({
      width: width,
      height: height,
      tileWidth: tw,
      tileHeight: th,
      tileOverlap: 0,
      minLevel: minLevel,
      maxLevel: maxLevel,
    });
    // The tile grid of each level comes from that level's stored size (the pyramid may round
    // down where OpenSeadragon's halving rounds up), so no tile past the edge is requested.
    source.getNumTiles = function (level) {
      const size = levelSize(data, maxLevel - level);
      return new OSD.Point(Math.ceil(size.x / tw), Math.ceil(size.y / th));
    };
    source.getTileUrl = function (level, col, row) {
      return tilePath + "?tile=" + (maxLevel - level) + "," + col + "," + row + "," + tw + "," + th + "&" + query;
    };
    return { source: source, query: query };
  }

  function buildControls(data, state, refresh) {
    const z = document.getElementById("z");
    const t = document.getElementById("t");
    const zOut = document.getElementById("z-value");
    const tOut = document.getElementById("t-value");
    const grey = document.getElementById("greyscale");
    z.max = String(data.size.z - 1);
    t.max = String(data.size.t - 1);
    z.value = String(state.z);
    t.value = String(state.t);
    z.disabled = data.size.z < 2;
    t.disabled = data.size.t < 2;
    grey.checked = state.greyscale;
    function planeText() {
      zOut.textContent = state.z + 1 + "/" + data.size.z;
      tOut.textContent = state.t + 1 + "/" + data.size.t;
    }
    planeText();
    z.addEventListener("input", function () {
      state.z = Number(z.value);
      planeText();
      refresh();
    });
    t.addEventListener("input", function () {
      state.t = Number(t.value);
      planeText();
      refresh();
    });
    grey.addEventListener("change", function () {
      state.greyscale = grey.checked;
      refresh();
    });

    const box = document.getElementById("channels");
    const step = data.meta.pixelsType.indexOf("float") === 0 ? "any" : "1";
    state.channels.forEach(function (ch, i) {
      const row = document.createElement("div");
      row.className = "channel";
      row.dataset.channel = String(i + 1);

      const active = document.createElement("input");
      active.type = "checkbox";
      active.checked = ch.active;
      active.className = "channel-active";
      active.title = "show channel " + (i + 1);
      active.addEventListener("change", function () {
        ch.active = active.checked;
        refresh();
      });

      const name = document.createElement("span");
      name.className = "channel-label";
      name.textContent = ch.label;

      const colour = document.createElement("input");
      colour.type = "color";
      colour.className = "channel-colour";
      colour.value = "#" + ch.colour.toLowerCase();
      colour.title = "colour of channel " + (i + 1);
      colour.addEventListener("change", function () {
        ch.colour = hexColour(colour.value);
        ch.colourChanged = true;
        refresh();
      });

      function windowInput(cls, key) {
        const input = document.createElement("input");
        input.type = "number";
        input.className = cls;
        input.step = step;
        input.min = String(ch.min);
        input.max = String(ch.max);
        input.value = fmt(ch[key]);
        input.title = (key === "start" ? "window start" : "window end") + " of channel " + (i + 1);
        input.addEventListener("change", function () {
          const v = Number(input.value);
          if (input.value === "" || !Number.isFinite(v)) {
            input.value = fmt(ch[key]);
            return;
          }
          ch[key] = v;
          refresh();
        });
        return input;
      }

      const label = document.createElement("label");
      label.append(active, " ", name);
      row.append(label, colour, windowInput("channel-start", "start"), "–", windowInput("channel-end", "end"));
      box.append(row);
    });
  }

  function start(data) {
    const OSD = window.OpenSeadragon;
    if (!OSD) {
      throw new Error("OpenSeadragon did not load");
    }
    document.getElementById("image-name").textContent = data.meta.imageName || "image " + imageId;
    document.title = (data.meta.imageName || "Image " + imageId) + " · idrserve";
    const state = {
      z: data.rdefs.defaultZ,
      t: data.rdefs.defaultT,
      greyscale: data.rdefs.model === "greyscale",
      channels: data.channels.map(function (ch) {
        return {
          label: ch.label,
          active: ch.active,
          colour: ch.color,
          lut: ch.lut || null,
          colourChanged: false,
          start: ch.window.start,
          end: ch.window.end,
          min: ch.window.min,
          max: ch.window.max,
        };
      }),
    };
    const viewer = OSD({
      id: "osd",
      prefixUrl: body.dataset.osdImages,
      drawer: "canvas",
      showNavigator: true,
      showRotationControl: true,
      crossOriginPolicy: false,
      immediateRender: false,
      imageSmoothingEnabled: data.interpolate !== false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
    });
    const api = { viewer: viewer, state: state, data: data, query: null, generation: 0, current: null };
    window.idrViewer = api;
    viewer.addHandler("tile-load-failed", function (event) {
      // e.g. a 400 for more active channels than the server allows: say so, keep the view.
      if (event.tiledImage !== api.current) {
        return; // a superseded image's tiles may be dropped on the way
      }
      setStatus("a tile failed to load (" + (event.message || "error") + "); check the settings", "error");
    });

    let timer = null;
    function show() {
      const generation = ++api.generation;
      const built = makeTileSource(data, state);
      api.query = built.query;
      body.dataset.query = built.query;
      body.dataset.plane = state.z + "," + state.t;
      setStatus("loading tiles…", "loading");
      viewer.addTiledImage({
        tileSource: built.source,
        success: function (event) {
          const item = event.item;
          if (generation === api.generation) {
            api.current = item;
          }
          function loaded() {
            if (generation !== api.generation) {
              return;
            }
            // Only now drop the previous images, so a change never flashes an empty view.
            for (let i = viewer.world.getItemCount() - 1; i >= 0; i--) {
              const other = viewer.world.getItemAt(i);
              if (other !== item) {
                viewer.world.removeItem(other);
              }
            }
            setStatus("z " + (state.z + 1) + "/" + data.size.z + ", t " + (state.t + 1) + "/" + data.size.t, "loaded");
          }
          if (item.getFullyLoaded()) {
            loaded();
          }
          item.addHandler("fully-loaded-change", function (e) {
            if (e.fullyLoaded) {
              loaded();
            } else if (generation === api.generation) {
              setStatus("loading tiles…", "loading");
            }
          });
        },
        error: function (event) {
          fail(new Error(event.message || "could not open the tile source"));
        },
      });
    }
    function refresh() {
      // Coalesce a burst of changes (slider drags) into one set of tile URLs.
      if (timer !== null) {
        clearTimeout(timer);
      }
      body.dataset.state = "loading";
      timer = setTimeout(function () {
        timer = null;
        show();
      }, 120);
    }
    api.refresh = refresh;
    buildControls(data, state, refresh);
    show();
  }

  document.getElementById("controls").addEventListener("submit", function (e) {
    e.preventDefault();
  });
  fetch(base + "/webgateway/imgData/" + imageId + "/", { headers: { Accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) {
        throw new Error("imgData answered " + r.status);
      }
      return r.json();
    })
    .then(start)
    .catch(fail);
})();
