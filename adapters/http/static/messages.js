// The Messages tab: open rows, retry, and the New Message form over the JSON API.
"use strict";

(function () {
  const STANDARD_TAGS = new Set([
    "customer_name", "customer_first_name", "customer_email", "customer_phone",
    "company_name", "rep_name",
  ]);
  const HEADERS = { "Content-Type": "application/json", "X-Requested-With": "ledger" };

  function debounce(action, wait) {
    let timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(action, wait);
    };
  }

  async function post(url, body, extraHeaders) {
    const response = await fetch(url, {
      method: "POST",
      headers: Object.assign({}, HEADERS, extraHeaders || {}),
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    return { ok: response.ok, status: response.status, payload: payload };
  }

  function problem(result) {
    if (result.payload && result.payload.error) return result.payload.error;
    return { message: "The server answered " + result.status + "; try again.", field: null };
  }

  // Rows open the message: the whole row acts as its link.
  document.querySelectorAll("tr.row[data-href]").forEach(function (row) {
    row.addEventListener("click", function (event) {
      if (event.target.closest("a, button")) return;
      window.location.href = row.dataset.href;
    });
  });

  const pageAlert = document.getElementById("page-alert");
  const retry = document.getElementById("retry");
  if (retry) {
    retry.addEventListener("click", async function () {
      retry.disabled = true;
      const result = await post(retry.dataset.url);
      if (result.ok) { window.location.reload(); return; }
      pageAlert.textContent = problem(result).message;
      pageAlert.hidden = false;
      retry.disabled = false;
    });
  }

  const dialog = document.getElementById("new-message");
  const configNode = document.getElementById("form-config");
  if (!dialog || !configNode) return;
  const config = JSON.parse(configNode.textContent);
  const form = document.getElementById("new-message-form");
  const channel = document.getElementById("m-channel");
  const to = document.getElementById("m-to");
  const cc = document.getElementById("m-cc");
  const bcc = document.getElementById("m-bcc");
  const template = document.getElementById("m-template");
  const subject = document.getElementById("m-subject");
  const body = document.getElementById("m-body");
  const files = document.getElementById("m-attachments");
  const mergeBox = document.getElementById("merge-values");
  const mergeFields = document.getElementById("merge-fields");
  const segments = document.getElementById("segments");
  const preview = document.getElementById("preview");
  const formAlert = document.getElementById("form-alert");
  const send = document.getElementById("send");
  const attachHint = document.getElementById("attach-hint");
  let idempotencyKey = null;
  let attachmentsTooBig = false;

  function size(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
    return Math.ceil(bytes / 1024) + " KB";
  }

  attachHint.textContent = "Up to " + size(config.attachmentLimit) + " in total.";

  function clearErrors() {
    form.querySelectorAll(".field-error").forEach(function (node) { node.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (node) { node.removeAttribute("aria-invalid"); });
    formAlert.hidden = true;
  }

  function showError(error) {
    const field = (error.field || "").split(".")[0];
    const slot = field && form.querySelector('.field-error[data-field="' + field + '"]');
    if (slot) {
      slot.textContent = error.message;
      const input = document.querySelector('[aria-describedby~="' + slot.id + '"]');
      if (input) input.setAttribute("aria-invalid", "true");
      return;
    }
    formAlert.textContent = error.message;
    formAlert.hidden = false;
  }

  function mergeValues() {
    const values = {};
    mergeFields.querySelectorAll("input").forEach(function (input) {
      if (input.value) values[input.name] = input.value;
    });
    return values;
  }

  function addresses(text) {
    return text.split(/[,;]/).map(function (part) { return part.trim(); }).filter(Boolean);
  }

  function command() {
    const email = channel.value === "email";
    return {
      customer_id: config.customerId,
      channel: channel.value,
      to: to.value.trim() || null,
      cc: email ? addresses(cc.value) : [],
      bcc: email ? addresses(bcc.value) : [],
      subject: email ? subject.value || null : null,
      body: body.value || null,
      template_id: template.value || null,
      merge_values: mergeValues(),
    };
  }

  function selectedTemplate() {
    return config.templates.find(function (t) { return t.template_id === template.value; });
  }

  function onChannel() {
    form.classList.toggle("channel-email", channel.value === "email");
    form.classList.toggle("channel-sms", channel.value === "sms");
    to.value = to.dataset[channel.value] || "";
    template.querySelectorAll("option[data-channel]").forEach(function (option) { option.remove(); });
    config.templates.filter(function (t) { return t.channel === channel.value; }).forEach(function (t) {
      const option = document.createElement("option");
      option.value = t.template_id;
      option.dataset.channel = t.channel;
      option.textContent = t.template_id + (t.description ? " — " + t.description : "");
      template.appendChild(option);
    });
    template.value = "";
    onTemplate();
  }

  function onTemplate() {
    const chosen = selectedTemplate();
    mergeFields.textContent = "";
    const tags = chosen ? chosen.latest.merge_tags.filter(function (tag) { return !STANDARD_TAGS.has(tag); }) : [];
    tags.forEach(function (tag) {
      const wrap = document.createElement("div");
      wrap.className = "field";
      const label = document.createElement("label");
      label.htmlFor = "merge-" + tag;
      label.textContent = tag.replace(/_/g, " ");
      const input = document.createElement("input");
      input.id = "merge-" + tag;
      input.name = tag;
      input.addEventListener("input", debounce(fillFromTemplate, 350));
      wrap.appendChild(label);
      wrap.appendChild(input);
      mergeFields.appendChild(wrap);
    });
    mergeBox.hidden = tags.length === 0;
    if (chosen) fillFromTemplate(); else refresh();
  }

  // Picking a template renders it with the customer's values into Subject and Body.
  async function fillFromTemplate() {
    if (!template.value) return;
    const draft = command();
    draft.subject = null;
    draft.body = null;
    const result = await post(config.previewUrl, draft);
    clearErrors();
    if (!result.ok) { showError(problem(result)); return; }
    subject.value = result.payload.subject || "";
    body.value = result.payload.text || "";
    showPreview(result.payload);
    countSegments();
  }

  function showPreview(draft) {
    preview.textContent = "";
    const lines = [["To", draft.to.join(", ")]];
    if (draft.cc.length) lines.push(["CC", draft.cc.join(", ")]);
    if (draft.bcc.length) lines.push(["BCC", draft.bcc.join(", ")]);
    if (draft.subject) lines.push(["Subject", draft.subject]);
    lines.forEach(function (pair) {
      const line = document.createElement("div");
      const label = document.createElement("strong");
      label.textContent = pair[0] + ": ";
      line.appendChild(label);
      line.appendChild(document.createTextNode(pair[1]));
      preview.appendChild(line);
    });
    const text = document.createElement("pre");
    text.textContent = draft.text;
    preview.appendChild(text);
  }

  async function refresh() {
    if (!body.value.trim()) return;
    const result = await post(config.previewUrl, command());
    clearErrors();
    if (result.ok) { showPreview(result.payload); return; }
    showError(problem(result));
    preview.innerHTML = '<p class="muted">Fix the marked field to see the preview.</p>';
  }

  async function countSegments() {
    if (channel.value !== "sms") return;
    const result = await post(config.segmentsUrl, { body: body.value });
    if (!result.ok) return;
    const count = result.payload;
    segments.textContent = count.segments + " segment" + (count.segments === 1 ? "" : "s") +
      " · " + count.encoding + " · " + count.units +
      (count.encoding === "GSM-7" ? " septets" : " UTF-16 units") +
      " (limit " + count.limit + " segments)";
  }

  function checkAttachments() {
    let total = 0;
    Array.from(files.files).forEach(function (file) { total += file.size; });
    const slot = document.getElementById("err-attachments");
    attachmentsTooBig = total > config.attachmentLimit;
    slot.textContent = attachmentsTooBig
      ? "These files total " + size(total) + "; the limit is " +
        size(config.attachmentLimit) + ". Remove some."
      : "";
    send.disabled = attachmentsTooBig;
  }

  function readFile(file) {
    return new Promise(function (resolve, reject) {
      const reader = new FileReader();
      reader.onload = function () {
        resolve({ name: file.name, media_type: file.type || null, content: reader.result.split(",")[1] || "" });
      };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(file);
    });
  }

  async function submit(event) {
    event.preventDefault();
    if (attachmentsTooBig) return;
    clearErrors();
    send.disabled = true;
    const draft = command();
    draft.attachments = channel.value === "email"
      ? await Promise.all(Array.from(files.files).map(readFile)) : [];
    const result = await post(config.sendUrl, draft, { "Idempotency-Key": idempotencyKey });
    if (result.ok) {
      const url = new URL(window.location.href);
      url.search = "?message=" + encodeURIComponent(result.payload.message_id);
      window.location.href = url.toString();
      return;
    }
    showError(problem(result));
    send.disabled = false;
  }

  function open() {
    idempotencyKey = window.crypto.randomUUID
      ? window.crypto.randomUUID()
      : Date.now() + "-" + Math.random().toString(36).slice(2);
    form.reset();
    clearErrors();
    preview.innerHTML = '<p class="muted">The message as it will be sent appears here.</p>';
    onChannel();
    dialog.showModal();
  }

  document.getElementById("new-message-open").addEventListener("click", open);
  document.getElementById("new-message-close").addEventListener("click", function () { dialog.close(); });
  document.getElementById("new-message-cancel").addEventListener("click", function () { dialog.close(); });
  channel.addEventListener("change", onChannel);
  template.addEventListener("change", onTemplate);
  const later = debounce(function () { refresh(); countSegments(); }, 300);
  [body, subject, to, cc, bcc].forEach(function (input) { input.addEventListener("input", later); });
  files.addEventListener("change", checkAttachments);
  form.addEventListener("submit", submit);
})();
