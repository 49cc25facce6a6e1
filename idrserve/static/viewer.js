// idrserve's built-in viewer: OpenSeadragon over OMERO.web webgateway tiles.
//
// The image's metadata comes from /webgateway/imgData/{id}/; every tile is
// /webgateway/render_image_region/{id}/{z}/{t}/?tile={level},{col},{row},{w},{h}&c=…&m=…&q=…
// where webgateway level 0 is full resolution (OpenSeadragon's level numbering runs the
// other way). render_image_region ignores `p=`, as on OMERO.web, so a projection is shown
// from IIIF region tiles instead, whose identifier carries the same settings plus `p`
// (/iiif/3/{id};c=…;m=…;p=intmax;t=…/{x},{y},{w},{h}/{w},{h}/0/default.jpg).
// Each control change builds a new tile source with new URLs; the old image stays on screen
// until the new one has finished loading, then it is removed.
//
// The view (plane, channels, windows, LUTs, model, projection, zoom and centre) is kept in
// the URL fragment (viewer-state.js), so a link reproduces it.
//
// Every URL starts with <body data-base>, the path prefix the server is reached under ("" at
// the root, "/idr" behind a proxy serving it under /idr/), so the page works under any prefix.
//
// For tests and scripting, window.idrViewer exposes the viewer and the state, and
// <body data-state> is "loading", "loaded" (every visible tile drawn) or "error".
(function (ns) {
  "use strict";

  const body = document.body;
  const imageId = body.dataset.imageId;
  const base = body.dataset.base || "";
  const statusEl = document.getElementById("status");
  const FALLBACK_TILE = 512;
  const PLAY_MS = 600; // shortest time a played plane stays on screen

  function setStatus(text, state) {
    statusEl.textContent = text;
    if (state) {
      body.dataset.state = state;
    }
  }

  function fail(err) {
    setStatus("error: " + (err && err.message ? err.message : String(err)), "error");
  }

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) {
        throw new Error(url.replace(base, "") + " answered " + r.status);
      }
      return r.json();
    });
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

  function makeTileSource(data, state) {
    const OSD = window.OpenSeadragon;
    const width = data.size.width;
    const height = data.size.height;
    const tw = data.tile_size ? data.tile_size.width : Math.min(FALLBACK_TILE, width);
    const th = data.tile_size ? data.tile_size.height : Math.min(FALLBACK_TILE, height);
    const maxLevel = Math.max(0, Math.ceil(Math.log2(Math.max(width, height))));
    const levels = usableLevels(data);
    const minLevel = Math.max(0, maxLevel - (levels - 1));
    const query = ns.renderQuery(state);
    const tilePath = base + "/webgateway/render_image_region/" + imageId + "/" + state.z + "/" + state.t + "/";
    const iiifPath = base + "/iiif/3/" + ns.iiifIdentifier(imageId, state) + "/";
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
    if (state.projection) {
      // The same tile as a IIIF region: full-resolution box in, the level's tile size out.
      source.getTileUrl = function (level, col, row) {
        const wg = maxLevel - level;
        const f = Math.pow(2, wg);
        const size = levelSize(data, wg);
        const x = col * tw * f;
        const y = row * th * f;
        const w = Math.min(tw * f, width - x);
        const h = Math.min(th * f, height - y);
        const ow = Math.min(tw, size.x - col * tw);
        const oh = Math.min(th, size.y - row * th);
        return iiifPath + [x, y, w, h].join(",") + "/" + ow + "," + oh + "/0/default.jpg";
      };
    } else {
      source.getTileUrl = function (level, col, row) {
        return tilePath + "?tile=" + (maxLevel - level) + "," + col + "," + row + "," + tw + "," + th + "&" + query;
      };
    }
    return { source: source, query: query + (state.projection ? "&p=" + state.projection : "") };
  }

  // Z, T (sliders, play buttons), projection and greyscale; returns sync() to show the state.
  function buildPlaneControls(data, state, api) {
    const z = document.getElementById("z");
    const t = document.getElementById("t");
    const zOut = document.getElementById("z-value");
    const tOut = document.getElementById("t-value");
    const zPlay = document.getElementById("z-play");
    const tPlay = document.getElementById("t-play");
    const grey = document.getElementById("greyscale");
    const projection = document.getElementById("projection");
    z.max = String(data.size.z - 1);
    t.max = String(data.size.t - 1);
    projection.disabled = data.size.z < 2;
    function sync() {
      z.value = String(state.z);
      t.value = String(state.t);
      z.disabled = data.size.z < 2 || Boolean(state.projection);
      t.disabled = data.size.t < 2;
      zPlay.disabled = z.disabled;
      tPlay.disabled = t.disabled;
      zOut.textContent = state.projection ? "all " + data.size.z : state.z + 1 + "/" + data.size.z;
      tOut.textContent = state.t + 1 + "/" + data.size.t;
      grey.checked = state.greyscale;
      projection.value = state.projection;
      [
        [zPlay, "z"],
        [tPlay, "t"],
      ].forEach(function (pair) {
        const on = api.playing === pair[1];
        pair[0].setAttribute("aria-pressed", String(on));
        pair[0].textContent = on ? "⏸" : "▶";
      });
    }
    z.addEventListener("input", function () {
      api.stopPlaying("z");
      state.z = Number(z.value);
      sync();
      api.refresh();
    });
    t.addEventListener("input", function () {
      api.stopPlaying("t");
      state.t = Number(t.value);
      sync();
      api.refresh();
    });
    zPlay.addEventListener("click", function () {
      api.togglePlay("z");
    });
    tPlay.addEventListener("click", function () {
      api.togglePlay("t");
    });
    grey.addEventListener("change", function () {
      state.greyscale = grey.checked;
      api.refresh();
    });
    projection.addEventListener("change", function () {
      state.projection = projection.value;
      api.stopPlaying("z");
      sync();
      api.refresh();
    });
    sync();
    return sync;
  }

  // Bins over the channel's min..max: one per value for a short integer range, else 1024
  // (the sliders often show only the few percent of a 16-bit range the data fills).
  function histogramBins(channel, pixelsType) {
    const span = channel.window.max - channel.window.min;
    const integer = !/float|double/.test(pixelsType);
    return integer && span < 1024 ? Math.max(1, Math.round(span) + 1) : 1024;
  }

  function start(data) {
    const OSD = window.OpenSeadragon;
    if (!OSD) {
      throw new Error("OpenSeadragon did not load");
    }
    document.getElementById("image-name").textContent = data.meta.imageName || "image " + imageId;
    document.title = (data.meta.imageName || "Image " + imageId) + " · idrserve";
    const state = ns.applyHash(location.hash, ns.defaultState(data), data);
    let pendingView = state.view; // applied once the first image is in the world
    const viewer = OSD({
      id: "osd",
      prefixUrl: body.dataset.osdImages,
      drawer: "canvas",
      // Controls outside the picture: buttons in the bar below it, the overview in the side
      // panel, so nothing ever covers the image.
      toolbar: "toolbar",
      showNavigator: true,
      navigatorId: "navigator",
      showRotationControl: true,
      crossOriginPolicy: false,
      immediateRender: false,
      imageSmoothingEnabled: data.interpolate !== false,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
      // A resized window keeps the zoom and the centre (what a link names); a view that is
      // still the whole image is fitted again (the "resize" handler below).
      preserveImageSizeOnResize: true,
    });
    const api = {
      viewer: viewer,
      state: state,
      data: data,
      query: null,
      generation: 0,
      current: null,
      playing: null,
    };
    window.idrViewer = api;
    viewer.addHandler("tile-load-failed", function (event) {
      // e.g. a 400 for more active channels than the server allows: say so, keep the view.
      if (event.tiledImage !== api.current) {
        return; // a superseded image's tiles may be dropped on the way
      }
      api.stopPlaying();
      setStatus("a tile failed to load (" + (event.message || "error") + "); check the settings", "error");
    });

    // ---- the view in the URL fragment --------------------------------------------------
    let written = location.hash.replace(/^#/, "");
    let hashTimer = null;
    // Whether the view is the user's (or a link's) rather than the whole image: only then
    // does the fragment name a zoom and centre, so a link to the whole image shows the whole
    // image in any window, and a resized window keeps showing all of it.
    let moved = Boolean(pendingView);
    [
      "canvas-drag",
      "canvas-scroll",
      "canvas-pinch",
      "canvas-click",
      "canvas-double-click",
      "canvas-key",
      "navigator-click",
      "navigator-drag",
      "navigator-scroll",
    ].forEach(function (name) {
      viewer.addHandler(name, function () {
        moved = true;
      });
    });
    document.getElementById("toolbar").addEventListener("pointerdown", function () {
      moved = true; // zoom buttons; "home" below resets it
    });
    viewer.addHandler("home", function () {
      moved = false;
      scheduleHash();
    });
    viewer.addHandler("resize", function () {
      if (!moved) {
        viewer.viewport.goHome(true);
      }
    });
    function currentView() {
      const item = viewer.world.getItemAt(0);
      if (!item || pendingView) {
        return pendingView;
      }
      if (!moved) {
        return null;
      }
      const vp = viewer.viewport;
      const c = item.viewportToImageCoordinates(vp.getCenter(true));
      return { x: c.x, y: c.y, zoom: item.viewportToImageZoom(vp.getZoom(true)) };
    }
    function writeHash() {
      hashTimer = null;
      state.view = currentView();
      const hash = ns.formatHash(state);
      if (hash !== written) {
        written = hash;
        history.replaceState(null, "", "#" + hash);
      }
      body.dataset.hash = hash;
    }
    function scheduleHash() {
      if (hashTimer === null) {
        hashTimer = setTimeout(writeHash, 200);
      }
    }
    function applyView(item, view) {
      const vp = viewer.viewport;
      vp.zoomTo(item.imageToViewportZoom(view.zoom), null, true);
      vp.panTo(item.imageToViewportCoordinates(new OSD.Point(view.x, view.y)), true);
    }

    // ---- panels ---------------------------------------------------------------------------
    const luts = getJson(base + "/webgateway/luts/")
      .then(function (doc) {
        return (doc.luts || []).map(function (l) {
          return l.name;
        });
      })
      .catch(function () {
        return [];
      });
    const channels = ns.buildChannels(document.getElementById("channels"), {
      data: data,
      state: state,
      luts: luts,
      onChange: function () {
        api.refresh();
      },
      histogramUrl: function (c, z, t) {
        return base + "/webgateway/histogram_json/" + imageId + "/channel/" + c + "/?theZ=" + z + "&theT=" + t + "&bins=" + histogramBins(data.channels[c], data.meta.pixelsType);
      },
    });
    const info = ns.buildInfo({
      data: data,
      base: base,
      imageId: imageId,
      api: getJson(base + "/api/v1/images/" + imageId).catch(function () {
        return null;
      }),
    });
    const scale = ns.scaleBarUpdater(data);
    const zoomOut = document.getElementById("zoom-value");
    const readout = ns.pixelReadout({ data: data, base: base, imageId: imageId });

    // ---- showing the state ----------------------------------------------------------------
    let timer = null;
    let lastStep = 0;
    let playTimer = null;
    function show() {
      const generation = ++api.generation;
      const built = makeTileSource(data, state);
      api.query = built.query;
      body.dataset.query = built.query;
      body.dataset.plane = state.z + "," + state.t;
      body.dataset.projection = state.projection;
      setStatus("loading tiles…", "loading");
      if (!api.playing) {
        channels.loadHistograms(state.z, state.t);
      }
      info.update(state);
      readout.again(state);
      scheduleHash();
      viewer.addTiledImage({
        tileSource: built.source,
        success: function (event) {
          const item = event.item;
          if (generation === api.generation) {
            api.current = item;
          }
          if (pendingView) {
            applyView(item, pendingView);
            pendingView = null;
            moved = true; // after the "home" OpenSeadragon sends for its first image
          }
          showZoom();
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
            const where = state.projection ? state.projection.replace("int", "") + " projection" : "z " + (state.z + 1) + "/" + data.size.z;
            setStatus(where + ", t " + (state.t + 1) + "/" + data.size.t, "loaded");
            schedulePlay();
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

    // ---- Z and T playback: the next plane once this one is drawn and shown long enough ----
    function schedulePlay() {
      if (!api.playing || playTimer !== null) {
        return;
      }
      const wait = Math.max(0, PLAY_MS - (Date.now() - lastStep));
      playTimer = setTimeout(function () {
        playTimer = null;
        const axis = api.playing;
        if (!axis || body.dataset.state !== "loaded") {
          return;
        }
        const size = data.size[axis];
        state[axis] = (state[axis] + 1) % size;
        lastStep = Date.now();
        syncPlane();
        show();
      }, wait);
    }
    api.togglePlay = function (axis) {
      if (api.playing === axis) {
        api.stopPlaying();
        return;
      }
      api.playing = axis;
      lastStep = Date.now();
      syncPlane();
      if (body.dataset.state === "loaded") {
        schedulePlay();
      }
    };
    api.stopPlaying = function (axis) {
      if (api.playing && (!axis || api.playing === axis)) {
        api.playing = null;
        if (playTimer !== null) {
          clearTimeout(playTimer);
          playTimer = null;
        }
        syncPlane();
        channels.loadHistograms(state.z, state.t);
      }
    };
    const syncPlane = buildPlaneControls(data, state, api);

    // ---- keyboard: arrows step Z and T; space plays ---------------------------------------
    function stepPlane(axis, delta) {
      const size = data.size[axis];
      if (size < 2 || (axis === "z" && state.projection)) {
        return false; // nothing to step: leave the key to OpenSeadragon (it pans)
      }
      api.stopPlaying(axis);
      const next = Math.max(0, Math.min(size - 1, state[axis] + delta));
      if (next !== state[axis]) {
        state[axis] = next;
        syncPlane();
        refresh();
      }
      return true;
    }
    // Capture phase: seen before OpenSeadragon's canvas handler, which would pan.
    document.addEventListener(
      "keydown",
      function (e) {
        const tag = e.target && e.target.tagName;
        if (e.ctrlKey || e.altKey || e.metaKey || tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
          return;
        }
        let handled = false;
        if (e.key === "ArrowUp") {
          handled = stepPlane("z", 1);
        } else if (e.key === "ArrowDown") {
          handled = stepPlane("z", -1);
        } else if (e.key === "ArrowRight") {
          handled = stepPlane("t", 1);
        } else if (e.key === "ArrowLeft") {
          handled = stepPlane("t", -1);
        } else if (e.key === " " && tag !== "BUTTON" && tag !== "SUMMARY" && tag !== "A") {
          const axis = data.size.t > 1 ? "t" : data.size.z > 1 && !state.projection ? "z" : null;
          if (axis) {
            api.togglePlay(axis);
            handled = true;
          }
        }
        if (handled) {
          e.preventDefault();
          e.stopPropagation();
        }
      },
      true
    );

    // ---- scale bar, zoom, pixel values ----------------------------------------------------
    function showZoom() {
      const item = viewer.world.getItemAt(0);
      if (!item) {
        return;
      }
      const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
      scale(zoom);
      zoomOut.textContent = "zoom " + ns.fmt(Number((zoom * 100).toPrecision(3))) + " %";
    }
    viewer.addHandler("viewport-change", function () {
      showZoom();
      if (!pendingView) {
        scheduleHash();
      }
    });
    viewer.canvas.addEventListener("pointermove", function (e) {
      const item = viewer.world.getItemAt(0);
      if (!item) {
        return;
      }
      const rect = viewer.canvas.getBoundingClientRect();
      const p = item.viewerElementToImageCoordinates(new OSD.Point(e.clientX - rect.left, e.clientY - rect.top));
      readout.at(p.x, p.y, state);
    });
    viewer.canvas.addEventListener("pointerleave", function () {
      readout.clear();
    });

    // ---- a link pasted or edited in the address bar -------------------------------------
    window.addEventListener("hashchange", function () {
      const hash = location.hash.replace(/^#/, "");
      if (hash === written) {
        return;
      }
      written = hash;
      const fresh = ns.applyHash(hash, ns.defaultState(data), data);
      // In place: the channel rows hold these very objects.
      fresh.channels.forEach(function (ch, i) {
        Object.assign(state.channels[i], ch);
      });
      ["z", "t", "greyscale", "projection", "view"].forEach(function (key) {
        state[key] = fresh[key];
      });
      api.stopPlaying();
      syncPlane();
      channels.sync();
      const item = viewer.world.getItemAt(0);
      moved = Boolean(fresh.view);
      if (item && fresh.view) {
        applyView(item, fresh.view);
      } else if (item) {
        viewer.viewport.goHome(true);
      }
      refresh();
    });

    show();
  }

  document.getElementById("controls").addEventListener("submit", function (e) {
    e.preventDefault();
  });
  getJson(base + "/webgateway/imgData/" + imageId + "/")
    .then(start)
    .catch(fail);
})((window.idrserveViewer = window.idrserveViewer || {}));
