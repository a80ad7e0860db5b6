"use strict";
// The memory page: list, add, edit and delete through /api/memory (nabu_pipeline/memory_api.py).
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    // A token in the address bar is used once, then kept in this tab only and removed from the URL.
    sessionStorage.setItem("nabu-token", params.get("token"));
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  $("token").value = sessionStorage.getItem("nabu-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("nabu-token", $("token").value.trim());
    load();
  });

  function status(text, error = false) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  async function api(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    const token = $("token").value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) throw new Error("The token is missing or wrong.");
    if (!response.ok) {
      let text = response.statusText;
      try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
      throw new Error(text);
    }
    return response.status === 204 ? null : response.json();
  }

  const PREFERENCE = {
    speech_rate: "Speaking rate", temperature_unit: "Temperatures",
    address_as: "Call him", home_town: "His town",
  };

  function when(seconds) {
    return new Date(seconds * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function item(fact) {
    const li = document.createElement("li");
    li.className = fact.kind;
    li.dataset.id = fact.id;
    const words = document.createElement("div");
    words.className = "words";
    words.textContent = fact.kind === "preference"
      ? `${PREFERENCE[fact.subject] || fact.subject}: ${fact.value} (“${fact.words}”)`
      : `“${fact.words}”`;
    const meta = document.createElement("div");
    meta.className = "meta";
    const by = { spoken: "Warren said it", assistant: "Warren agreed", family: "added by family" };
    meta.textContent = `${by[fact.source] || fact.source}, ${when(fact.created_at)}` +
      (fact.updated_at > fact.created_at + 1 ? `; changed ${when(fact.updated_at)}` : "");
    const row = document.createElement("div");
    row.className = "row";
    if (fact.kind === "fact") {
      const edit = document.createElement("button");
      edit.className = "plain";
      edit.textContent = "Edit";
      edit.setAttribute("aria-label", `Edit: ${fact.words}`);
      edit.onclick = () => startEdit(li, fact);
      row.append(edit);
    }
    const del = document.createElement("button");
    del.className = "delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete: ${fact.words}`);
    del.onclick = async () => {
      if (!confirm(`Delete “${fact.words}”? Nabu will forget it.`)) return;
      try { await api("DELETE", `api/memory/${fact.id}`); status("Deleted."); load(); }
      catch (e) { status(e.message, true); }
    };
    row.append(del);
    li.append(words, meta, row);
    return li;
  }

  function startEdit(li, fact) {
    const input = document.createElement("input");
    input.type = "text";
    input.value = fact.words;
    input.maxLength = 500;
    input.setAttribute("aria-label", "New words");
    const save = document.createElement("button");
    save.textContent = "Save";
    save.onclick = async () => {
      try { await api("PATCH", `api/memory/${fact.id}`, { words: input.value }); status("Saved."); load(); }
      catch (e) { status(e.message, true); }
    };
    const row = document.createElement("div");
    row.className = "row";
    row.append(input, save);
    li.replaceChildren(row);
    input.focus();
  }

  async function load() {
    try {
      const { facts } = await api("GET", "api/memory");
      $("facts").replaceChildren(...facts.map(item));
      status(facts.length ? `${facts.length} kept.` : "Nothing kept yet.");
    } catch (e) {
      $("facts").replaceChildren();
      status(e.message, true);
    }
  }

  $("add").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const { replaced } = await api("POST", "api/memory", { words: $("words").value });
      $("words").value = "";
      status(replaced ? `Saved; it replaces “${replaced.words}”.` : "Saved.");
      load();
    } catch (e) { status(e.message, true); }
  });

  load();
})();
