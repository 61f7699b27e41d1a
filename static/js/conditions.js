// The condition picker of the provider's dataset form: a search box over the ICD-10 list
// (a <datalist>, so the browser does the searching) whose pick is added as one line of the
// conditions field. Without this script the picked value is posted beside the field and
// the server adds it the same way.
(function () {
  "use strict";
  function setUp(picker) {
    var field = document.getElementById(picker.getAttribute("data-conditions-for"));
    var search = picker.querySelector("input[list]");
    var button = picker.querySelector("[data-conditions-add]");
    var status = picker.querySelector("[aria-live]");
    var options = Array.prototype.map.call(picker.querySelectorAll("datalist option"), function (o) {
      return o.value;
    });
    if (!field || !search || !button) {
      return;
    }
    function add() {
      var value = search.value.trim();
      if (!value) {
        return;
      }
      if (options.indexOf(value) === -1) {
        status.textContent = "Pick a condition from the list (type part of its code or name).";
        return;
      }
      var lines = field.value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean);
      if (lines.indexOf(value) === -1) {
        lines.push(value);
        field.value = lines.join("\n");
      }
      status.textContent = "Added " + value.replace("|", " ") + ".";
      search.value = "";
      search.focus();
    }
    button.addEventListener("click", add);
    search.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();  // adding, not submitting the whole form
        add();
      }
    });
    // A pick from the list fills the box with an exact value: add it straight away.
    search.addEventListener("change", function () {
      if (options.indexOf(search.value.trim()) !== -1) {
        add();
      }
    });
  }
  document.querySelectorAll(".condition-picker").forEach(setUp);
})();
