// Generations filter, and plot points that name a feature open its card.
(function () {
  var LIMIT = 100;
  var table = document.querySelector("table.gens");
  var selects = document.querySelectorAll("select[data-filter]");
  var count = document.getElementById("gen-count");
  var showAll = false;
  function apply() {
    if (!table) return;
    var want = {};
    selects.forEach(function (s) { want[s.dataset.filter] = s.value; });
    var shown = 0, matching = 0;
    table.querySelectorAll("tbody tr").forEach(function (tr) {
      var ok = Object.keys(want).every(function (k) { return !want[k] || tr.dataset[k] === want[k]; });
      if (ok) matching += 1;
      var visible = ok && (showAll || shown < LIMIT);
      if (visible) shown += 1;
      tr.hidden = !visible;
    });
    count.textContent = "showing " + shown + " of " + matching + " matching";
    if (shown < matching) {
      var b = document.createElement("button");
      b.textContent = "show all";
      b.onclick = function () { showAll = true; apply(); };
      count.appendChild(document.createTextNode(" "));
      count.appendChild(b);
    }
  }
  selects.forEach(function (s) { s.addEventListener("change", function () { showAll = false; apply(); }); });
  apply();
  window.addEventListener("load", function () {
    document.querySelectorAll(".plotly-graph-div").forEach(function (el) {
      if (typeof el.on !== "function") return;
      el.on("plotly_click", function (d) {
        var id = d.points && d.points[0] && d.points[0].customdata;
        if (typeof id === "string" && id && document.getElementById(id)) location.hash = id;
      });
    });
  });
})();
