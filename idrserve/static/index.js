// The image index: each card shows only its id until it scrolls into view, then its name,
// size and channel count from /webgateway/imgData/{id}/ (a few requests at a time), so a
// page of a catalog of millions costs the server nothing for cards nobody looks at.
//
// Every URL starts with <body data-base>, the public path prefix ("" at the root).
(function () {
  "use strict";

  const base = document.body.dataset.base || "";
  const MAX_IN_FLIGHT = 4;
  const queue = [];
  let inFlight = 0;

  function sizeText(data) {
    const s = data.size;
    const parts = [s.width + " × " + s.height];
    if (s.z > 1) {
      parts.push("Z " + s.z);
    }
    if (s.t > 1) {
      parts.push("T " + s.t);
    }
    parts.push(s.c + (s.c === 1 ? " channel" : " channels"));
    return parts.join(" · ");
  }

  function fill(card, data) {
    const name = data.meta && data.meta.imageName ? data.meta.imageName : "";
    card.querySelector(".card-name").textContent = name;
    card.querySelector(".card-size").textContent = sizeText(data);
    card.title = (name ? name + "\n" : "") + sizeText(data) + ", " + data.meta.pixelsType;
    card.dataset.state = "loaded";
  }

  function next() {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      const card = queue.shift();
      inFlight += 1;
      fetch(base + "/webgateway/imgData/" + card.dataset.imageId + "/", {
        headers: { Accept: "application/json" },
      })
        .then(function (r) {
          if (!r.ok) {
            throw new Error("imgData answered " + r.status);
          }
          return r.json();
        })
        .then(function (data) {
          fill(card, data);
        })
        .catch(function () {
          card.dataset.state = "error";
          card.querySelector(".card-size").textContent = "metadata unavailable";
        })
        .finally(function () {
          inFlight -= 1;
          next();
        });
    }
  }

  const cards = document.querySelectorAll("#images li[data-image-id]");
  const observer = new IntersectionObserver(
    function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) {
          observer.unobserve(entry.target);
          entry.target.dataset.state = "loading";
          queue.push(entry.target);
        }
      });
      next();
    },
    { rootMargin: "200px" }
  );
  cards.forEach(function (card) {
    observer.observe(card);
  });
})();
