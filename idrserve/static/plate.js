// The plate page: OMERO.web's plate grid (/webgateway/plate/{id}/{field}/[{acquisition}/])
// drawn as a table, each well's thumbnail fetched in get_thumbnails batches (as OMERO.web's
// plate browser does) and linked to the image viewer. The field selector pages through the
// fields; a plate with several acquisitions gets an acquisition selector too.
//
// Every URL starts with <body data-base>, the public path prefix ("" at the root).
(function () {
  "use strict";

  const base = document.body.dataset.base || "";
  const plateId = document.body.dataset.plateId;
  const SIZE = 64;
  const BATCH = 48;
  const IN_FLIGHT = 4;
  const fieldSelect = document.getElementById("field");
  const acqSelect = document.getElementById("acquisition");
  const grid = document.getElementById("grid");
  const status = document.getElementById("status");
  let generation = 0;

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) {
        throw new Error(url + " answered " + r.status);
      }
      return r.json();
    });
  }

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = String(value);
    o.textContent = text;
    select.appendChild(o);
  }

  function cell(entry) {
    const td = document.createElement("td");
    if (!entry) {
      td.className = "empty";
      return td;
    }
    const a = document.createElement("a");
    a.href = base + "/viewer/" + entry.id;
    a.title = entry.name;
    a.dataset.imageId = String(entry.id);
    td.appendChild(a);
    return td;
  }

  function draw(doc) {
    grid.textContent = "";
    const head = grid.insertRow();
    head.appendChild(document.createElement("th"));
    doc.collabels.forEach(function (label) {
      const th = document.createElement("th");
      th.textContent = String(label);
      head.appendChild(th);
    });
    const links = [];
    doc.grid.forEach(function (row, r) {
      const tr = grid.insertRow();
      const th = document.createElement("th");
      th.textContent = String(doc.rowlabels[r]);
      tr.appendChild(th);
      row.forEach(function (entry) {
        const td = cell(entry);
        tr.appendChild(td);
        if (entry) {
          links.push(td.firstChild);
        }
      });
    });
    return links;
  }

  function loadThumbnails(links, mine) {
    const batches = [];
    for (let i = 0; i < links.length; i += BATCH) {
      batches.push(links.slice(i, i + BATCH));
    }
    let running = 0;
    let done = 0;
    return new Promise(function (resolve) {
      function next() {
        if (mine !== generation) {
          resolve();
          return;
        }
        if (done === batches.length) {
          resolve();
          return;
        }
        while (running < IN_FLIGHT && batches.length > 0) {
          const batch = batches.shift();
          running += 1;
          const query = batch.map(function (a) { return "id=" + a.dataset.imageId; }).join("&");
          getJson(base + "/webgateway/get_thumbnails/" + SIZE + "/?" + query)
            .then(function (thumbs) {
              batch.forEach(function (a) {
                const uri = thumbs[a.dataset.imageId];
                if (uri) {
                  const img = document.createElement("img");
                  img.alt = a.title;
                  img.src = uri;
                  a.appendChild(img);
                } else {
                  a.parentNode.className = "broken";
                  a.textContent = "×";
                }
              });
            })
            .catch(function (err) { status.textContent = String(err); })
            .then(function () {
              running -= 1;
              done += 1;
              next();
            });
        }
        if (batches.length === 0 && running === 0) {
          resolve();
        }
      }
      next();
    });
  }

  function show() {
    generation += 1;
    const mine = generation;
    const field = fieldSelect.value || "0";
    const acq = acqSelect.value;
    let url = base + "/webgateway/plate/" + plateId + "/" + field + "/";
    if (acq) {
      url += acq + "/";
    }
    document.getElementById("montage-link").href = base + "/webgateway/plate/" + plateId +
      "/montage.jpg?field=" + field + (acq ? "&acquisition=" + acq : "");
    status.textContent = "field " + (Number(field) + 1) + ": loading…";
    document.body.dataset.state = "loading";
    return getJson(url + "?layout=trim&size=" + SIZE).then(function (doc) {
      const links = draw(doc);
      return loadThumbnails(links, mine).then(function () {
        if (mine === generation) {
          status.textContent = "field " + (Number(field) + 1) + " of " +
            fieldSelect.options.length + ": " + links.length + " wells";
          document.body.dataset.state = "ready";
        }
      });
    });
  }

  function step(delta) {
    const n = fieldSelect.options.length;
    const i = fieldSelect.selectedIndex + delta;
    if (i >= 0 && i < n) {
      fieldSelect.selectedIndex = i;
      show();
    }
  }

  getJson(base + "/api/v1/plates/" + plateId).then(function (plate) {
    document.getElementById("plate-name").textContent = plate.name;
    document.title = "idrserve · " + plate.name;
    for (let f = 0; f < Math.max(1, plate.field_count); f += 1) {
      option(fieldSelect, f, String(f + 1));
    }
    if (plate.acquisitions.length > 1) {
      option(acqSelect, "", "all");
      plate.acquisitions.forEach(function (a) { option(acqSelect, a.id, a.name || String(a.id)); });
      document.getElementById("acquisition-label").hidden = false;
    }
    fieldSelect.addEventListener("change", show);
    acqSelect.addEventListener("change", show);
    document.getElementById("prev-field").addEventListener("click", function () { step(-1); });
    document.getElementById("next-field").addEventListener("click", function () { step(1); });
    return show();
  }).catch(function (err) {
    status.textContent = String(err);
    document.body.dataset.state = "failed";
  });
})();
