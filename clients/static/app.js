// The liaison desk page. It talks only to the siko process that served it (same
// origin); that process holds the agency's key, opens notes and seals replies.
// Every text from a note goes into the page with textContent, never as HTML.
"use strict";

const RECEIPTS_EVERY_MS = 4000;
const RECEIPTS_MAX = 20;

const desk = {
  agency: null,
  options: null,
  channels: new Map(), // name -> summary from the UI server
  notes: new Map(), // name -> notes (oldest first), once loaded
  current: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function api(path, body) {
  const init = { credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await response.json() : null;
  if (!response.ok) {
    throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

// -- channels ---------------------------------------------------------------------

function renderChannels() {
  const list = $("channels");
  list.replaceChildren();
  for (const summary of desk.channels.values()) {
    const button = el("button", summary.channel === desk.current ? "current" : "");
    button.type = "button";
    button.dataset.channel = summary.channel;
    button.append(el("span", "name", summary.channel));
    if (summary.roles.includes("read")) {
      const badge = el("span", summary.unread ? "unread" : "unread zero", summary.unread);
      badge.title = "unread notes";
      button.append(badge);
    }
    button.addEventListener("click", () => openChannel(summary.channel));
    const item = el("li");
    item.append(button);
    list.append(item);
  }
}

function updateChannel(summary) {
  desk.channels.set(summary.channel, summary);
  renderChannels();
  if (summary.channel === desk.current) renderHead();
}

function renderHead() {
  const summary = desk.channels.get(desk.current);
  $("channel-name").textContent = summary.channel;
  const roles = summary.roles.join(" + ");
  $("channel-meta").textContent =
    `ceiling ${summary.ceiling} · your roles: ${roles} · readers: ${summary.readers.join(", ")}`;
  $("mark-read").hidden = !summary.roles.includes("read");
  $("mark-read").disabled = !summary.unread;
}

async function openChannel(name) {
  desk.current = name;
  renderChannels();
  $("channel").hidden = false;
  renderHead();
  renderCompose();
  const summary = desk.channels.get(name);
  if (summary.roles.includes("read")) {
    const data = await api(`/api/channels/${encodeURIComponent(name)}/notes`);
    desk.notes.set(name, data.notes);
    updateChannel(data.channel);
  }
  renderNotes();
}

// -- notes ------------------------------------------------------------------------

function streamKey(id) {
  const [ms, seq] = id.split("-").map(Number);
  return ms * 1e6 + seq;
}

function markingClass(classification) {
  return "marking cls-" + classification.toLowerCase().replace(/[^a-z0-9]+/g, "-");
}

function marking(note) {
  const parts = [note.classification, `handling ${note.handling}`, `TLP:${note.tlp}`];
  if (note.source || note.info) parts.push(`eval ${note.source || "?"}${note.info || "?"}`);
  return el("div", markingClass(note.classification), parts.join(" · "));
}

function renderNote(note, position) {
  const item = el("li", "note");
  item.dataset.streamId = note.stream_id;
  if (note.message_id) item.dataset.messageId = note.message_id;
  if (note.mine) item.classList.add("mine");
  else if (streamKey(note.stream_id) > streamKey(position)) item.classList.add("unseen");
  if (note.error) {
    item.append(el("div", "marking", "UNVERIFIED"));
    item.append(el("p", "error", `${note.error} — from ${note.sender}`));
    return item;
  }
  item.append(marking(note));
  const when = new Date(note.created).toLocaleString();
  const from = note.mine ? `${note.sender} (you)` : note.sender;
  item.append(el("div", "meta", `${from} · ${when}${note.case_ref ? " · case " + note.case_ref : ""}`));
  if (note.subject) item.append(el("div", "subject", note.subject));
  item.append(el("p", "text", note.text));
  if (note.mine) item.append(el("div", "receipts", "read receipts: …"));
  item.append(marking(note));
  return item;
}

function renderNotes() {
  const list = $("notes");
  list.replaceChildren();
  const summary = desk.channels.get(desk.current);
  for (const note of desk.notes.get(desk.current) || []) {
    list.append(renderNote(note, summary.position));
  }
  list.lastElementChild?.scrollIntoView({ block: "end" });
  refreshReceipts();
}

function noteArrived(note, unread) {
  const summary = desk.channels.get(note.channel);
  if (!summary) return;
  const notes = desk.notes.get(note.channel);
  if (notes && !notes.some((n) => n.stream_id === note.stream_id)) {
    notes.push(note);
    if (note.channel === desk.current) {
      const item = renderNote(note, summary.position);
      $("notes").append(item);
      item.scrollIntoView({ block: "end" });
      if (note.mine) refreshReceipts();
    }
  }
  updateChannel({ ...summary, unread });
}

async function markRead() {
  const notes = desk.notes.get(desk.current) || [];
  if (!notes.length) return;
  const last = notes[notes.length - 1].stream_id;
  const summary = await api(`/api/channels/${encodeURIComponent(desk.current)}/read`, {
    stream_id: last,
  });
  updateChannel(summary);
  for (const item of $("notes").querySelectorAll(".note.unseen")) item.classList.remove("unseen");
}

// -- read receipts of one's own notes ----------------------------------------------

async function refreshReceipts() {
  const name = desk.current;
  const items = [...$("notes").querySelectorAll(".note.mine")].slice(-RECEIPTS_MAX);
  for (const item of items) {
    if (item.dataset.allRead) continue;
    const path = `/api/channels/${encodeURIComponent(name)}/receipts/${item.dataset.messageId}`;
    try {
      const receipt = await api(path);
      const others = (list) => list.filter((a) => a !== desk.agency);
      const read = others(receipt.read_by);
      const unread = others(receipt.unread_by);
      const line = [`read by: ${read.length ? read.join(", ") : "nobody yet"}`];
      if (unread.length) line.push(`not yet: ${unread.join(", ")}`);
      else item.dataset.allRead = "yes";
      item.querySelector(".receipts").textContent = line.join(" · ");
    } catch (error) {
      item.querySelector(".receipts").textContent = `read receipts unavailable: ${error.message}`;
    }
  }
}

// -- compose ----------------------------------------------------------------------

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => el("option", "", v)));
  select.value = chosen;
}

function renderCompose() {
  const form = $("compose");
  const summary = desk.channels.get(desk.current);
  form.hidden = !summary.roles.includes("post");
  if (form.hidden) return;
  const levels = desk.options.classifications;
  const allowed = levels.slice(0, levels.indexOf(summary.ceiling) + 1);
  fillSelect(form.elements.classification, allowed, allowed[allowed.length - 1]);
  fillSelect(form.elements.handling, desk.options.handling, "H1");
  fillSelect(form.elements.tlp, desk.options.tlp, "AMBER");
  $("compose-readers").textContent =
    `Sealed in the siko process for: ${summary.readers.join(", ")}. The hub never sees the text.`;
}

async function send(event) {
  event.preventDefault();
  const form = event.target;
  const fields = Object.fromEntries(
    ["text", "subject", "case_ref", "classification", "handling", "tlp"].map((k) => [
      k,
      form.elements[k].value,
    ]),
  );
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  $("compose-status").textContent = "sealing and sending…";
  try {
    await api(`/api/channels/${encodeURIComponent(desk.current)}/notes`, fields);
    for (const name of ["text", "subject", "case_ref"]) form.elements[name].value = "";
    $("compose-status").textContent = "sent";
  } catch (error) {
    $("compose-status").textContent = `not sent: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

// -- start, and the live stream ----------------------------------------------------

async function refresh() {
  const state = await api("/api/state");
  desk.agency = state.agency;
  desk.options = state;
  $("agency").textContent = state.agency;
  desk.channels = new Map(state.channels.map((c) => [c.channel, c]));
  desk.notes.clear();
  renderChannels();
  const first = state.channels.length ? state.channels[0].channel : null;
  const target = desk.channels.has(desk.current) ? desk.current : first;
  if (target) await openChannel(target);
}

function setStatus(text, live) {
  $("status").textContent = text;
  $("status").classList.toggle("live", live);
}

function connect() {
  const events = new EventSource("/api/events");
  // After every (re)connect, reload: whatever arrived while away is in the state.
  events.addEventListener("open", () => {
    setStatus("live", true);
    refresh().catch((error) => setStatus(`error: ${error.message}`, false));
  });
  events.addEventListener("error", () => setStatus("reconnecting…", false));
  events.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "note") noteArrived(event.note, event.unread);
    else if (event.type === "channel") updateChannel(event.channel);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("compose").addEventListener("submit", send);
  $("mark-read").addEventListener("click", () =>
    markRead().catch((error) => setStatus(`error: ${error.message}`, false)),
  );
  setInterval(() => desk.current && refreshReceipts(), RECEIPTS_EVERY_MS);
  connect();
});
