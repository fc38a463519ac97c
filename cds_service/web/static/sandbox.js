// Sandbox page: fills the form from a scenario, fires through /sandbox/api/fire, and posts
// card feedback to the service's real feedback endpoint. Cards arrive as server-rendered,
// escaped HTML; everything this script writes itself goes through textContent.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const api = document.body.dataset.api;
  const servicesBase = document.body.dataset.services;

  const form = $("#fire-form");
  const scenarioSelect = $("#scenario");
  const scenarioPane = $("#scenario-pane");
  const bundlePane = $("#bundle-pane");
  const bundleInput = $("#bundle");
  const hookSelect = $("#hook");
  const ordersPane = $("#orders-pane");
  const ordersInput = $("#draft-orders");
  const ordersError = $("#orders-error");
  const selectionsPane = $("#selections-pane");
  const selectionsBox = $("#selections");
  const timeInput = $("#evaluation-time");
  const fireButton = $("#fire");
  const fireError = $("#fire-error");
  const results = $("#results");
  const exchange = $("#exchange");

  let serviceId = null;
  let currentScenario = null;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function sourceMode() {
    return form.elements.source.value;
  }

  function showPanes() {
    const byScenario = sourceMode() === "scenario";
    scenarioPane.hidden = !byScenario;
    bundlePane.hidden = byScenario;
    const hook = hookSelect.value;
    ordersPane.hidden = hook === "patient-view";
    selectionsPane.hidden = hook !== "order-select";
  }

  // -- draft orders and selections --------------------------------------------------------

  function parseDrafts() {
    const text = ordersInput.value.trim();
    ordersError.textContent = "";
    if (!text) return [];
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      ordersError.textContent = `Not valid JSON: ${error.message}`;
      return null;
    }
    if (value && value.resourceType === "Bundle") {
      value = (value.entry || []).map((entry) => entry && entry.resource);
    } else if (!Array.isArray(value)) {
      value = [value];
    }
    return value.filter((order) => order && order.resourceType && order.id);
  }

  function orderLabel(order) {
    const concept = order.code || order.medicationCodeableConcept || {};
    const coding = (concept.coding || [])[0] || {};
    return concept.text || coding.display || coding.code || "";
  }

  function tickedSelections() {
    return Array.from(selectionsBox.querySelectorAll("input:checked"), (box) => box.value);
  }

  function renderSelections(ticked) {
    const drafts = parseDrafts();
    if (drafts === null) return;
    const keep = ticked || tickedSelections();
    selectionsBox.replaceChildren();
    for (const order of drafts) {
      const ref = `${order.resourceType}/${order.id}`;
      const label = element("label", "check");
      const box = element("input");
      box.type = "checkbox";
      box.value = ref;
      box.checked = keep.includes(ref);
      const text = element("span");
      text.append(element("code", "", ref));
      const description = orderLabel(order);
      if (description) text.append(` ${description}`);
      label.append(box, text);
      selectionsBox.append(label);
    }
  }

  // -- scenarios ----------------------------------------------------------------------------

  async function loadScenario(id) {
    form.dataset.loaded = "";
    const response = await fetch(`${api}/scenarios/${encodeURIComponent(id)}`);
    if (!response.ok) {
      showError(await response.json());
      return;
    }
    currentScenario = await response.json();
    hookSelect.value = currentScenario.hook;
    timeInput.value = currentScenario.evaluationTime || "";
    ordersInput.value = currentScenario.draftOrders.length
      ? JSON.stringify(currentScenario.draftOrders, null, 2) : "";
    renderSelections(currentScenario.selections);
    $("#scenario-description").textContent = currentScenario.description || "";
    showPanes();
    form.dataset.loaded = id;
  }

  function copyRecordToEditor() {
    if (!currentScenario) return;
    bundleInput.value = JSON.stringify(currentScenario.record, null, 2);
    form.elements.source.value = "bundle";
    showPanes();
    bundleInput.focus();
  }

  function readUpload(event) {
    const file = event.target.files[0];
    if (!file) return;
    file.text().then((text) => { bundleInput.value = text; });
  }

  // -- firing -------------------------------------------------------------------------------

  function showError(body) {
    fireError.replaceChildren(element("strong", "", body.error || "The request failed"));
    const details = body.details || [];
    if (details.length) {
      const list = element("ul");
      for (const detail of details) {
        const item = element("li");
        item.append(element("code", "", detail.pointer || "/"), ` ${detail.message}`);
        list.append(item);
      }
      fireError.append(list);
    }
    fireError.hidden = false;
  }

  function showVerdict(data) {
    const verdict = $("#verdict");
    verdict.replaceChildren();
    if (data.status !== 200) {
      verdict.append(element("span", "verdict-bad",
        `HTTP ${data.status}: no response body to validate`));
    } else if (!data.violations.length) {
      verdict.append(element("span", "verdict-ok", "✓ Valid CDS Hooks 2.0 response"));
    } else {
      verdict.append(element("span", "verdict-bad",
        `✗ ${data.violations.length} violation(s) of CDS Hooks 2.0`));
      const list = element("ul");
      for (const v of data.violations) {
        const item = element("li");
        item.append(element("code", "", v.pointer || "/"), ` ${v.message}`);
        list.append(item);
      }
      verdict.append(list);
    }
  }

  async function fire(event) {
    event.preventDefault();
    const hook = hookSelect.value;
    const body = { hook, evaluationTime: timeInput.value.trim() };
    if (sourceMode() === "scenario") body.scenario = scenarioSelect.value;
    else body.bundle = bundleInput.value;
    if (hook !== "patient-view") {
      body.draftOrders = ordersInput.value;
      if (hook === "order-select") body.selections = tickedSelections();
    }
    fireButton.disabled = true;
    fireButton.textContent = "Firing…";
    fireError.hidden = true;
    try {
      const response = await fetch(`${api}/fire`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const data = await response.json();
      if (!response.ok) {
        showError(data);
        results.replaceChildren(element("div", "empty-state",
          "Not fired: correct the request and fire again."));
        exchange.hidden = true;
        return;
      }
      serviceId = data.serviceId;
      results.innerHTML = data.html; // rendered and escaped by the server
      $("#request-json").textContent = JSON.stringify(data.request, null, 2);
      $("#response-json").textContent = JSON.stringify(data.response, null, 2);
      showVerdict(data);
      exchange.hidden = false;
      results.dataset.fired = String(Date.now());
    } catch (error) {
      showError({ error: `The sandbox could not be reached: ${error.message}` });
    } finally {
      fireButton.disabled = false;
      fireButton.textContent = "Fire hook";
    }
  }

  // -- card feedback ------------------------------------------------------------------------

  async function sendFeedback(card, item) {
    const feedback = { card: card.dataset.card, outcomeTimestamp: new Date().toISOString(),
      ...item };
    const response = await fetch(
      `${servicesBase}/${encodeURIComponent(serviceId)}/feedback`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ feedback: [feedback] }),
      });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message += `: ${(await response.json()).error}`; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
  }

  function setStatus(card, text, kind) {
    const status = $(".feedback-status", card);
    status.textContent = text;
    status.className = `feedback-status ${kind ? `is-${kind}` : ""}`;
  }

  async function accept(button) {
    const card = button.closest(".card");
    const suggestion = button.closest(".suggestion");
    $(".actions", suggestion).hidden = false;
    button.disabled = true;
    const id = suggestion.dataset.suggestion;
    if (!id) {
      setStatus(card, "Suggestion has no uuid: no feedback can be sent", "error");
      return;
    }
    try {
      await sendFeedback(card, { outcome: "accepted", acceptedSuggestions: [{ id }] });
      button.textContent = "Accepted ✓";
      button.classList.add("is-done");
      setStatus(card, "Accepted: feedback recorded", "ok");
      if (card.dataset.selectionBehavior === "at-most-one") {
        card.querySelectorAll(".accept").forEach((other) => { other.disabled = true; });
      }
    } catch (error) {
      button.disabled = false;
      setStatus(card, `Feedback failed: ${error.message}`, "error");
    }
  }

  async function override(overrideForm) {
    const card = overrideForm.closest(".card");
    const item = { outcome: "overridden" };
    const reasonSelect = overrideForm.elements.reason;
    const comment = overrideForm.elements.comment.value.trim();
    let shown = "";
    if (reasonSelect) {
      const reason = JSON.parse(reasonSelect.selectedOptions[0].dataset.coding);
      item.overrideReason = { reason };
      shown = reason.display || reason.code;
    }
    if (comment) item.overrideReason = { ...(item.overrideReason || {}), userComment: comment };
    const submit = $("button[type=submit]", overrideForm);
    submit.disabled = true;
    try {
      await sendFeedback(card, item);
      overrideForm.hidden = true;
      card.classList.add("is-overridden");
      card.querySelectorAll("button").forEach((button) => { button.disabled = true; });
      setStatus(card, shown ? `Overridden: ${shown}` : "Dismissed: feedback recorded", "ok");
    } catch (error) {
      submit.disabled = false;
      setStatus(card, `Feedback failed: ${error.message}`, "error");
    }
  }

  results.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button || !results.contains(button)) return;
    const card = button.closest(".card");
    if (button.classList.contains("accept")) {
      accept(button);
    } else if (button.classList.contains("override-toggle")) {
      $(".override-form", card).hidden = false;
      button.hidden = true;
    } else if (button.classList.contains("override-cancel")) {
      $(".override-form", card).hidden = true;
      $(".override-toggle", card).hidden = false;
    }
  });

  results.addEventListener("submit", (event) => {
    if (!event.target.classList.contains("override-form")) return;
    event.preventDefault();
    override(event.target);
  });

  // -- wiring -------------------------------------------------------------------------------

  form.addEventListener("submit", fire);
  form.addEventListener("change", (event) => {
    if (event.target.name === "source" || event.target === hookSelect) showPanes();
  });
  scenarioSelect.addEventListener("change", () => loadScenario(scenarioSelect.value));
  ordersInput.addEventListener("input", () => renderSelections());
  $("#copy-record").addEventListener("click", copyRecordToEditor);
  $("#bundle-file").addEventListener("change", readUpload);

  showPanes();
  if (scenarioSelect.value) loadScenario(scenarioSelect.value);
})();
