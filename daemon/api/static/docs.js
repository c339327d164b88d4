// llmgine: loads /openapi.json (with a credential when the daemon asks for one) and renders it
// with Swagger UI or ReDoc. The credential comes from the URL fragment (#token=..., which is
// never sent to the server) or from the form, and is kept in sessionStorage for this tab only.
(function () {
  "use strict";
  var STORE = "llmgine-docs-token";
  var viewer = document.getElementById("viewer");
  var kind = viewer.getAttribute("data-viewer");
  var specUrl = viewer.getAttribute("data-spec");
  var authBox = document.getElementById("llmgine-auth");
  var authError = document.getElementById("llmgine-auth-error");

  function tokenFromFragment() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (match) {
      sessionStorage.setItem(STORE, decodeURIComponent(match[1]));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return sessionStorage.getItem(STORE);
  }

  function render(spec, token) {
    if (kind === "swagger") {
      var ui = SwaggerUIBundle({ spec: spec, dom_id: "#viewer", deepLinking: true });
      if (token) ui.preauthorizeApiKey("bearer", token);
    } else {
      Redoc.init(spec, { hideDownloadButton: false, expandResponses: "200,201" }, viewer);
    }
  }

  function ask(message) {
    authBox.hidden = false;
    authError.textContent = message || "";
  }

  function load(token) {
    var headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    fetch(specUrl, { headers: headers, credentials: "omit" }).then(function (resp) {
      if (resp.status === 401 || resp.status === 403) {
        sessionStorage.removeItem(STORE);
        ask(token ? "That credential was refused (HTTP " + resp.status + ")." : "");
        return null;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.json();
    }).then(function (spec) {
      if (spec) {
        authBox.hidden = true;
        render(spec, token);
      }
    }).catch(function (err) {
      ask("Could not load " + specUrl + ": " + err.message);
    });
  }

  authBox.querySelector("form").addEventListener("submit", function (event) {
    event.preventDefault();
    var token = event.target.elements.token.value.trim();
    if (token) sessionStorage.setItem(STORE, token);
    load(token);
  });

  load(tokenFromFragment());
})();
