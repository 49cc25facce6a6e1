// idrserve viewer: the image panel (metadata, links, a Python snippet), the scale bar and
// the pixel value under the pointer.
//
// Every server URL starts with `base`, the public path prefix (<body data-base>).
(function (ns) {
  "use strict";

  function text(tag, value, className) {
    const node = document.createElement(tag);
    node.textContent = value;
    if (className) {
      node.className = className;
    }
    return node;
  }

  function micro(v) {
    return ns.fmt(Number(v.toPrecision(4))) + " µm";
  }

  // The metadata list, the links and the snippet. `api` is a promise of
  // /api/v1/images/{id} (source format, the Zarr view's axes), or of null.
  function buildInfo(opts) {
    const data = opts.data;
    const base = opts.base;
    const id = opts.imageId;
    const meta = document.getElementById("meta");
    const rows = {};
    function row(key, label, value) {
      const dd = text("dd", value);
      dd.id = "meta-" + key;
      meta.append(text("dt", label), dd);
      rows[key] = dd;
    }
    const s = data.size;
    const px = data.pixel_size || {};
    row("name", "Name", data.meta.imageName || "–");
    row("id", "Image id", String(id));
    row("dimensions", "Dimensions", s.width + " × " + s.height + " px · Z " + s.z + " · C " + s.c + " · T " + s.t);
    row("dtype", "Pixel type", data.meta.pixelsType);
    if (px.x) {
      let size = micro(px.x) + " × " + micro(px.y || px.x);
      if (px.z) {
        size += " × " + micro(px.z) + " (z)";
      }
      row("pixel-size", "Pixel size", size);
      row("extent", "Field", micro(px.x * s.width) + " × " + micro((px.y || px.x) * s.height));
    } else {
      row("pixel-size", "Pixel size", "not recorded");
    }
    row("channels", "Channels", data.channels.map(function (ch) { return ch.label; }).join(", "));
    row("levels", "Resolutions", String(data.levels || 1) + (data.tile_size ? " (tiles " + data.tile_size.width + " × " + data.tile_size.height + ")" : ""));
    row("format", "Source", "…");
    if (data.meta.imageDescription) {
      row("description", "Description", data.meta.imageDescription);
    }

    const links = document.getElementById("links");
    function link(key, label, href) {
      const a = text("a", label);
      a.href = href;
      a.id = "link-" + key;
      const li = document.createElement("li");
      li.append(a);
      links.append(li);
      return a;
    }
    const viewLink = link("iiif-view", "IIIF info.json of this view", "");
    link("iiif", "IIIF Image API 3 info.json", base + "/iiif/3/" + id + "/info.json");
    link("manifest", "IIIF manifest", base + "/iiif/3/" + id + "/manifest.json");
    link("dzi", "DeepZoom .dzi", base + "/deepzoom/" + id + ".dzi");
    link("zarr", "OME-Zarr (NGFF 0.4)", base + "/zarr/" + id + ".zarr/");
    link("api", "Raw-pixel API", base + "/api/v1/images/" + id);
    link("imgdata", "imgData JSON", base + "/webgateway/imgData/" + id + "/");
    const planeLink = link("plane", "This plane as PNG", "");

    const snippet = document.getElementById("snippet");
    let axes = ["t", "c", "z", "y", "x"];
    let last = null;
    function update(state) {
      last = state;
      viewLink.href = base + "/iiif/3/" + ns.iiifIdentifier(id, state) + "/info.json";
      let plane = base + "/webgateway/render_image/" + id + "/" + state.z + "/" + state.t + "/?" + ns.renderQuery(state) + "&format=png";
      if (state.projection) {
        plane += "&p=" + state.projection;
      }
      planeLink.href = plane;
      snippet.textContent = pythonSnippet(location.origin + base + "/zarr/" + id + ".zarr", axes, data, state);
    }
    opts.api.then(function (info) {
      if (info) {
        rows.format.textContent = info.source_format || "–";
        if (info.zarr && Array.isArray(info.zarr.axes)) {
          axes = info.zarr.axes;
        }
      } else {
        rows.format.textContent = "–";
      }
      if (last) {
        update(last);
      }
    });

    const copy = document.getElementById("copy-snippet");
    const copied = document.getElementById("copy-status");
    copy.addEventListener("click", function () {
      const done = function (how) {
        copied.textContent = how;
        copy.dataset.copied = how;
      };
      const select = function () {
        // No clipboard API (a page not served over TLS or from localhost): select the text
        // so that Ctrl-C copies it.
        const range = document.createRange();
        range.selectNodeContents(snippet);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        done("selected: press Ctrl-C");
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(snippet.textContent).then(function () {
          done("copied");
        }, select);
      } else {
        select();
      }
    });
    return { update: update };
  }

  // Python that opens the image over the /zarr/ view with zarr and dask and selects the
  // plane on screen (axes as the view lays them out).
  function pythonSnippet(url, axes, data, state) {
    const index = [];
    const rest = [];
    axes.forEach(function (a) {
      if (a === "t") {
        index.push(String(state.t));
      } else if (a === "z") {
        index.push(state.projection ? ":" : String(state.z));
        if (state.projection) {
          rest.push("z");
        }
      } else {
        index.push(":");
        rest.push(a);
      }
    });
    while (index.length > 0 && index[index.length - 1] === ":") {
      index.pop();
    }
    const selection = index.length > 0 ? "image[" + index.join(", ") + "]" : "image";
    const crop = rest.map(function (a) {
      return a === "y" || a === "x" ? ":512" : ":";
    });
    const what = state.projection ? "every z of the timepoint on screen (t=" + state.t + ")" : "the plane on screen (z=" + state.z + ", t=" + state.t + ")";
    return [
      '# pip install "zarr>=3" fsspec aiohttp dask',
      "import dask.array as da",
      "import zarr",
      "",
      'url = "' + url + '"',
      'group = zarr.open_group(url, mode="r")',
      'axes = [a["name"] for a in group.attrs["multiscales"][0]["axes"]]  # ' + JSON.stringify(axes).replace(/"/g, "'"),
      'image = da.from_zarr(url + "/0")  # full resolution, lazy',
      "plane = " + selection + "  # " + what,
      "corner = plane[" + crop.join(", ") + "].compute()  # reads only the chunks it needs",
      "print(axes, image.shape, image.dtype, corner.shape, corner.max())",
      "",
    ].join("\n");
  }

  // The scale bar under the image: 48 to 120 screen pixels long, in nm, µm or mm.
  function scaleBarUpdater(data) {
    const box = document.getElementById("scalebar");
    const bar = box.querySelector(".bar");
    const label = box.querySelector(".label");
    const um = data.pixel_size && data.pixel_size.x;
    if (!um) {
      box.hidden = true;
      return function () {};
    }
    box.hidden = false;
    return function (imageZoom) {
      if (!(imageZoom > 0)) {
        return;
      }
      const perScreenPixel = um / imageZoom;
      const s = ns.scaleBar(perScreenPixel, 120);
      bar.style.width = (s.microns / perScreenPixel).toFixed(1) + "px";
      label.textContent = s.label;
      box.dataset.microns = String(s.microns);
    };
  }

  // Raw values under the pointer: a 1×1 region of every channel at full resolution through
  // /api/v1/images/{id}/region?…&format=raw, asked for once the pointer rests 150 ms; a newer
  // position aborts an older request.
  function pixelReadout(opts) {
    const out = document.getElementById("readout");
    const data = opts.data;
    let timer = null;
    let controller = null;
    let shown = "";
    function clear() {
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
      if (controller) {
        controller.abort();
        controller = null;
      }
    }
    function show(x, y, state, values) {
      out.textContent = "";
      out.append(text("span", "x " + x + ", y " + y + (state.projection ? " (z " + (state.z + 1) + ", unprojected)" : ""), "where"));
      values.forEach(function (v, c) {
        const ch = state.channels[c];
        const span = text("span", ch.label + " " + ns.fmt(Number(v.toPrecision(7))), "value" + (ch.active ? "" : " inactive"));
        span.dataset.channel = String(c + 1);
        out.append(span);
      });
      out.dataset.x = String(x);
      out.dataset.y = String(y);
      out.dataset.values = values.join(",");
    }
    let last = null;
    function at(x, y, state) {
      x = Math.floor(x);
      y = Math.floor(y);
      last = { x: x, y: y };
      const key = [x, y, state.z, state.t].join(",");
      if (x < 0 || y < 0 || x >= data.size.width || y >= data.size.height) {
        clear();
        out.textContent = "";
        shown = "";
        delete out.dataset.values;
        return;
      }
      if (key === shown) {
        return;
      }
      clear();
      timer = setTimeout(function () {
        timer = null;
        controller = new AbortController();
        const url = opts.base + "/api/v1/images/" + opts.imageId + "/region?level=0&t=" + state.t + "&z=" + state.z + "&y=" + y + ":" + (y + 1) + "&x=" + x + ":" + (x + 1) + "&format=raw";
        fetch(url, { signal: controller.signal })
          .then(function (r) {
            if (!r.ok) {
              throw new Error("region answered " + r.status);
            }
            const dtype = r.headers.get("X-Array-Dtype");
            return r.arrayBuffer().then(function (buf) {
              return ns.readRaw(buf, dtype);
            });
          })
          .then(function (values) {
            if (values) {
              shown = key;
              show(x, y, state, values);
            }
          })
          .catch(function (err) {
            if (err.name !== "AbortError") {
              out.textContent = "x " + x + ", y " + y + ": no value";
            }
          });
      }, 150);
    }
    // The plane changed under a resting pointer: its values there.
    function again(state) {
      if (last && out.dataset.values !== undefined) {
        at(last.x, last.y, state);
      }
    }
    return { at: at, clear: clear, again: again };
  }

  ns.buildInfo = buildInfo;
  ns.pythonSnippet = pythonSnippet;
  ns.scaleBarUpdater = scaleBarUpdater;
  ns.pixelReadout = pixelReadout;
})((window.idrserveViewer = window.idrserveViewer || {}));
