// idrserve viewer: one row of controls per channel.
//
// Each row: on/off, name, colour, LUT (from /webgateway/luts/), and the window as two sliders
// (start, end) over the channel's histogram, with number boxes for exact values. The histogram
// is OMERO.web's /webgateway/histogram_json/{id}/channel/{c}/?theZ=&theT= ({"data": [counts]},
// bins spread evenly over the channel's min..max); when the server has no such endpoint the
// sliders work without it and nothing is asked again.
(function (ns) {
  "use strict";

  const SLIDER_STEPS = 1000; // slider resolution for float pixel types

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      if (key === "dataset") {
        Object.assign(node.dataset, props.dataset);
      } else {
        node[key] = props[key];
      }
    });
    (children || []).forEach(function (child) {
      node.append(child);
    });
    return node;
  }

  // The slider's span: the channel's min..max, narrowed to where the histogram has data when
  // that is under half of it (16-bit data often fills a few thousand of 65 536 values).
  function sliderDomain(ch, histogram) {
    let lo = Math.min(ch.min, ch.start);
    let hi = Math.max(ch.max, ch.end);
    if (histogram && histogram.length > 0 && ch.max > ch.min) {
      let last = -1;
      for (let i = histogram.length - 1; i >= 0; i--) {
        if (histogram[i] > 0) {
          last = i;
          break;
        }
      }
      if (last >= 0) {
        const dataHi = ch.min + ((last + 1) * (ch.max - ch.min)) / histogram.length;
        if (dataHi - lo < 0.5 * (hi - lo)) {
          hi = Math.max(ch.end, dataHi + 0.05 * (dataHi - lo));
        }
      }
    }
    if (!(hi > lo)) {
      hi = lo + 1;
    }
    return { lo: lo, hi: hi };
  }

  function drawHistogram(canvas, ch, histogram, domain, colour) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    const span = domain.hi - domain.lo;
    const toX = function (v) {
      return ((v - domain.lo) / span) * width;
    };
    if (histogram) {
      const n = histogram.length;
      const binWidth = (ch.max - ch.min) / n;
      let peak = 0;
      histogram.forEach(function (count) {
        peak = Math.max(peak, count);
      });
      // Log counts: a background peak would flatten everything else.
      const scale = peak > 0 ? height / Math.log1p(peak) : 0;
      g.fillStyle = colour;
      histogram.forEach(function (count, i) {
        if (count <= 0) {
          return;
        }
        const x0 = toX(ch.min + i * binWidth);
        const x1 = toX(ch.min + (i + 1) * binWidth);
        if (x1 < 0 || x0 > width) {
          return;
        }
        const h = Math.log1p(count) * scale;
        g.fillRect(x0, height - h, Math.max(1, x1 - x0), h);
      });
    }
    // Shade what the window clips; mark its ends.
    const a = Math.max(0, Math.min(width, toX(ch.start)));
    const b = Math.max(0, Math.min(width, toX(ch.end)));
    g.fillStyle = "rgba(0, 0, 0, 0.55)";
    g.fillRect(0, 0, a, height);
    g.fillRect(b, 0, width - b, height);
    g.fillStyle = "#e6e6e6";
    g.fillRect(a - ratio / 2, 0, ratio, height);
    g.fillRect(b - ratio / 2, 0, ratio, height);
  }

  // Build the rows. `opts`: data, state, onChange(), luts (a promise of names), histogramUrl(c).
  function buildChannels(box, opts) {
    const state = opts.state;
    const isFloat = opts.data.meta.pixelsType.indexOf("float") === 0 || opts.data.meta.pixelsType === "double";
    const rows = [];
    let histogramOk = true;

    state.channels.forEach(function (ch, i) {
      const row = { ch: ch, histogram: null, domain: sliderDomain(ch, null) };
      const active = el("input", { type: "checkbox", className: "channel-active", title: "show channel " + (i + 1) });
      const name = el("span", { className: "channel-label", textContent: ch.label, title: ch.label });
      const colour = el("input", { type: "color", className: "channel-colour", title: "colour of channel " + (i + 1) });
      const lut = el("select", { className: "channel-lut", title: "lookup table of channel " + (i + 1), hidden: true }, [el("option", { value: "", textContent: "colour" })]);
      const canvas = el("canvas", { className: "channel-histogram", hidden: true });
      const startSlider = el("input", { type: "range", className: "channel-start-slider", title: "window start of channel " + (i + 1) });
      const endSlider = el("input", { type: "range", className: "channel-end-slider", title: "window end of channel " + (i + 1) });
      const step = isFloat ? "any" : "1";
      const startBox = el("input", { type: "number", className: "channel-start", step: step, title: "window start of channel " + (i + 1) });
      const endBox = el("input", { type: "number", className: "channel-end", step: step, title: "window end of channel " + (i + 1) });
      const head = el("div", { className: "channel-head" }, [el("label", {}, [active, " ", name]), colour, lut]);
      const sliders = el("div", { className: "window-sliders" }, [canvas, startSlider, endSlider]);
      const numbers = el("div", { className: "window-numbers" }, [startBox, el("span", { textContent: "–" }), endBox]);
      const node = el("div", { className: "channel", dataset: { channel: String(i + 1) } }, [head, sliders, numbers]);
      box.append(node);

      function colourCss() {
        return ch.lut ? "#aab" : "#" + ch.colour;
      }

      function sliderValue(v) {
        return isFloat ? String(v) : String(Math.round(v));
      }

      row.sync = function () {
        active.checked = ch.active;
        colour.value = "#" + ch.colour.toLowerCase();
        node.classList.toggle("uses-lut", Boolean(ch.lut));
        node.classList.toggle("inactive", !ch.active);
        if (ch.lut && !Array.prototype.some.call(lut.options, function (o) { return o.value === ch.lut; })) {
          lut.append(el("option", { value: ch.lut, textContent: ch.lut.replace(/\.lut$/i, "") }));
        }
        lut.value = ch.lut || "";
        row.domain = sliderDomain(ch, row.histogram);
        [startSlider, endSlider].forEach(function (s) {
          s.min = String(row.domain.lo);
          s.max = String(row.domain.hi);
          s.step = isFloat ? "any" : "1";
        });
        startSlider.value = sliderValue(ch.start);
        endSlider.value = sliderValue(ch.end);
        startBox.value = ns.fmt(ch.start);
        endBox.value = ns.fmt(ch.end);
        row.draw();
      };
      row.draw = function () {
        if (!canvas.hidden) {
          drawHistogram(canvas, ch, row.histogram, row.domain, colourCss());
        }
      };
      row.setHistogram = function (counts) {
        row.histogram = counts;
        canvas.hidden = !counts;
        node.classList.toggle("has-histogram", Boolean(counts));
        row.sync();
      };

      active.addEventListener("change", function () {
        ch.active = active.checked;
        node.classList.toggle("inactive", !ch.active);
        opts.onChange();
      });
      colour.addEventListener("change", function () {
        ch.colour = colour.value.replace(/^#/, "").toUpperCase();
        ch.lut = null;
        row.sync();
        opts.onChange();
      });
      lut.addEventListener("change", function () {
        ch.lut = lut.value || null;
        row.sync();
        opts.onChange();
      });
      function slide(which) {
        let start = Number(startSlider.value);
        let end = Number(endSlider.value);
        // The thumbs may not cross: the one being dragged stops at the other.
        if (start >= end) {
          if (which === "start") {
            start = end - (isFloat ? (row.domain.hi - row.domain.lo) / SLIDER_STEPS : 1);
            startSlider.value = sliderValue(start);
          } else {
            end = start + (isFloat ? (row.domain.hi - row.domain.lo) / SLIDER_STEPS : 1);
            endSlider.value = sliderValue(end);
          }
        }
        ch.start = start;
        ch.end = end;
        startBox.value = ns.fmt(start);
        endBox.value = ns.fmt(end);
        row.draw();
        opts.onChange();
      }
      startSlider.addEventListener("input", function () {
        slide("start");
      });
      endSlider.addEventListener("input", function () {
        slide("end");
      });
      function typed(input, key) {
        const v = Number(input.value);
        const other = key === "start" ? ch.end : ch.start;
        const ok = input.value !== "" && Number.isFinite(v) && (key === "start" ? v < other : v > other);
        if (ok) {
          ch[key] = v;
          opts.onChange();
        }
        row.sync();
      }
      startBox.addEventListener("change", function () {
        typed(startBox, "start");
      });
      endBox.addEventListener("change", function () {
        typed(endBox, "end");
      });

      opts.luts.then(function (names) {
        if (!names || names.length === 0) {
          return;
        }
        names.forEach(function (n) {
          if (n !== ch.lut) {
            lut.append(el("option", { value: n, textContent: n.replace(/\.lut$/i, "") }));
          }
        });
        lut.hidden = false;
        row.sync();
      });
      lut.hidden = !ch.lut; // a saved LUT shows at once; the others once the list arrives
      rows.push(row);
      row.sync();
    });

    // Histograms of the plane on screen, one request per channel, three at a time, once the
    // plane has stayed on screen a moment (a slider drag does not ask for every plane it
    // passes; playback asks for none until it stops).
    // The very first asks for channel 1 alone: a server without the endpoint (a 404) then
    // costs one request, after which the histograms are off for good and the sliders work on
    // their own (so does a first request that gets no answer at all). Any other failure
    // leaves that one histogram out.
    const HISTOGRAM_DELAY_MS = 300;
    const HISTOGRAMS_IN_FLIGHT = 3;
    let plane = null;
    let probed = false;
    let timer = null;
    function loadHistogram(c, key, z, t) {
      return fetch(opts.histogramUrl(c, z, t), { headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) {
            const err = new Error("histogram answered " + r.status);
            err.status = r.status;
            throw err;
          }
          return r.json();
        })
        .then(function (doc) {
          if (doc && Array.isArray(doc.data) && plane === key) {
            rows[c].setHistogram(doc.data);
          }
        });
    }
    function noHistograms() {
      histogramOk = false;
      rows.forEach(function (r) {
        r.setHistogram(null);
      });
      document.body.dataset.histogram = "unavailable";
    }
    function loadRest(key, z, t, first) {
      const queue = [];
      for (let c = first; c < rows.length; c++) {
        queue.push(c);
      }
      function next() {
        if (plane !== key || queue.length === 0) {
          return;
        }
        loadHistogram(queue.shift(), key, z, t)
          .catch(function () {})
          .then(next);
      }
      for (let i = 0; i < HISTOGRAMS_IN_FLIGHT; i++) {
        next();
      }
    }
    function loadHistograms(z, t) {
      const key = z + "," + t;
      if (!histogramOk || key === plane || rows.length === 0) {
        return;
      }
      plane = key;
      if (timer !== null) {
        clearTimeout(timer);
      }
      timer = setTimeout(function () {
        timer = null;
        if (plane !== key) {
          return;
        }
        if (probed) {
          loadRest(key, z, t, 0);
          return;
        }
        probed = true;
        loadHistogram(0, key, z, t).then(
          function () {
            loadRest(key, z, t, 1);
          },
          function (err) {
            if (!err || !err.status || err.status === 404) {
              noHistograms();
            } else {
              loadRest(key, z, t, 1);
            }
          }
        );
      }, HISTOGRAM_DELAY_MS);
    }

    window.addEventListener("resize", function () {
      rows.forEach(function (row) {
        row.draw();
      });
    });

    return {
      sync: function () {
        rows.forEach(function (row) {
          row.sync();
        });
      },
      loadHistograms: loadHistograms,
      rows: rows,
    };
  }

  ns.buildChannels = buildChannels;
  ns.sliderDomain = sliderDomain;
})((window.idrserveViewer = window.idrserveViewer || {}));
