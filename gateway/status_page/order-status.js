/* flashgate order status: shows one order's status, place in line and wait, and keeps it
   current until the order is delivered or failed. No framework; embed it anywhere:
     <div data-flashgate-order="ORDER_ID" data-flashgate-gateway="https://gw.example"
          data-flashgate-token="SHOPPER_TOKEN"></div>
     <script src="https://gw.example/order-status.js"></script>
   The token may also come from the page's #token=... fragment (never sent to servers). */
(function () {
  "use strict";
  var WORDS = {
    pending: ["Checking your order", "We are confirming it was stored. This takes seconds."],
    accepted: ["Order received", "It is safely queued and on its way to the shop."],
    delivered: ["Order placed", "The shop has your order."],
    failed: ["Order not placed", ""]
  };
  var REASONS = {
    not_stored: "It could not be stored. Nothing was charged; please order again.",
    late_record_after_release: "It was stored too late. Nothing was charged; please order again."
  };
  function wait(s) {
    if (s < 60) return "under a minute";
    var m = Math.round(s / 60);
    if (m < 60) return "about " + m + " min";
    return "about " + Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function el(tag, css, parent) {
    var e = document.createElement(tag);
    e.style.cssText = css;
    parent.appendChild(e);
    return e;
  }
  function mount(box) {
    var id = box.getAttribute("data-flashgate-order");
    var base = box.getAttribute("data-flashgate-gateway") || "";
    var hash = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    var token = box.getAttribute("data-flashgate-token") || (hash ? decodeURIComponent(hash[1]) : "");
    var title = el("div", "font-weight:600;font-size:1.15em", box);
    var detail = el("div", "margin-top:4px;color:#555", box);
    var line = el("div", "margin-top:10px;font-variant-numeric:tabular-nums", box);
    title.className = "fg-status";
    line.className = "fg-line";
    box.setAttribute("aria-live", "polite");
    function show(o) {
      var w = WORDS[o.status] || [o.status, ""];
      box.setAttribute("data-status", o.status);
      title.textContent = w[0];
      detail.textContent = o.status === "failed" ? (REASONS[o.reason] || "Reason: " + o.reason) : w[1];
      line.textContent = o.status === "accepted" && o.position != null
        ? (o.position ? o.position.toLocaleString() + " orders ahead" : "Next in line") +
          (o.eta_seconds != null ? ", " + wait(o.eta_seconds) : ", waiting for the shop")
        : "";
    }
    function poll() {
      var headers = token ? { Authorization: "Bearer " + token } : {};
      fetch(base + "/v1/orders/" + encodeURIComponent(id), { headers: headers, cache: "no-store" })
        .then(function (r) {
          return r.json().then(function (body) { return { ok: r.ok, status: r.status, body: body }; });
        })
        .then(function (r) {
          if (r.ok) {
            show(r.body);
            if (r.body.status !== "delivered" && r.body.status !== "failed") setTimeout(poll, 2000);
          } else if (r.status === 404 || r.status === 401) {
            box.setAttribute("data-status", "unknown");
            title.textContent = r.status === 404 ? "Order not found" : "Not allowed to see this order";
          } else setTimeout(poll, 5000);  // 429, 503: the gateway is busy; ask again later
        })
        .catch(function () { detail.textContent = "Reconnecting..."; setTimeout(poll, 5000); });
    }
    poll();
  }
  var boxes = document.querySelectorAll("[data-flashgate-order]");
  for (var i = 0; i < boxes.length; i++) mount(boxes[i]);
  window.flashgateOrderStatus = mount;
})();
