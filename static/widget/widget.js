/*!
 * ChatBase widget: one script tag adds a chat bubble to any page.
 *
 *   <script src="https://HOST/static/widget/widget.js" data-bot="PUBLIC_KEY" defer></script>
 *
 * No dependencies, no build step. Everything lives in a shadow root so the host
 * page's CSS cannot reach in and ours cannot leak out; styles are a constructable
 * stylesheet (allowed by a host's strict style-src CSP) and nothing uses eval or
 * innerHTML. Answers are rendered from Markdown by hand into text nodes: no HTML
 * from the model ever reaches the DOM. See docs/widget.md and docs/protocol.md.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.src) {
    return; // not loaded from a <script src> tag (e.g. as a module): nothing to read
  }
  var data = script.dataset;
  var BOT_KEY = data.bot;
  if (!BOT_KEY) {
    warn("data-bot (the bot's public key) is missing on the script tag.");
    return;
  }
  var registry = (window.__chatbaseWidgets = window.__chatbaseWidgets || {});
  if (registry[BOT_KEY]) {
    return; // the snippet was pasted twice: one widget per bot
  }
  registry[BOT_KEY] = true;

  var SERVER = new URL(script.src, document.baseURI).origin;
  var WS_SERVER = SERVER.replace(/^http/, "ws");
  var IDENTITY = data.userId ? { user_id: data.userId, user_hash: data.userHash || "", ts: data.userTs || "" } : null;
  var PREVIEW = data.preview || "";
  var START_OPEN = data.open === "true";
  var STORE_PREFIX = "chatbase:" + BOT_KEY + ":";
  var RECONNECT_BASE_MS = 500;
  var RECONNECT_CAP_MS = 30000;
  var CONFIG_ATTEMPTS = 5;
  var SAFE_SCHEMES = { "http:": true, "https:": true, "mailto:": true };

  function warn(text) {
    if (window.console && console.warn) {
      console.warn("ChatBase widget: " + text);
    }
  }

  // --- storage (may be unavailable: private modes, blocked third-party storage) ---
  function load(name) {
    try {
      return window.localStorage.getItem(STORE_PREFIX + name);
    } catch (e) {
      return null;
    }
  }
  function save(name, value) {
    try {
      if (value === null) {
        window.localStorage.removeItem(STORE_PREFIX + name);
      } else {
        window.localStorage.setItem(STORE_PREFIX + name, value);
      }
    } catch (e) {
      /* storage full or blocked: the widget still works for this page view */
    }
  }
  function loadJSON(name, fallback) {
    try {
      var value = JSON.parse(load(name) || "null");
      return value === null ? fallback : value;
    } catch (e) {
      return fallback;
    }
  }

  // --- tiny DOM helpers (text only: never innerHTML) ---------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      for (var name in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, name) && attrs[name] !== null && attrs[name] !== undefined) {
          if (name === "text") {
            node.textContent = attrs[name];
          } else if (name === "className") {
            node.className = attrs[name];
          } else {
            node.setAttribute(name, attrs[name]);
          }
        }
      }
    }
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";
  function icon(pathData) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", pathData);
    svg.appendChild(path);
    return svg;
  }
  var ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z";
  var ICON_CLOSE = "M6 6l12 12M18 6L6 18";
  var ICON_SEND = "M3 20l18-8L3 4v6l12 2-12 2z";

  // --- safe Markdown --------------------------------------------------------------
  // A deliberately small subset: paragraphs, line breaks, **bold**, *em*, `code`,
  // fenced code, bullet and numbered lists, and links whose scheme is http(s) or
  // mailto. Headings become bold paragraphs; images become links (never fetched);
  // HTML is just text.
  function safeHref(raw) {
    var url;
    try {
      url = new URL(String(raw).trim());
    } catch (e) {
      return null; // relative or malformed: it would resolve against the host page
    }
    return SAFE_SCHEMES[url.protocol] ? url.href : null;
  }

  function link(text, href, parent) {
    var safe = safeHref(href);
    if (!safe) {
      parent.appendChild(document.createTextNode(text));
      return;
    }
    var a = el("a", { href: safe, target: "_blank", rel: "noopener noreferrer nofollow" });
    a.textContent = text;
    parent.appendChild(a);
  }

  var LINK_RE = /^\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/;
  var AUTOLINK_RE = /^(?:https?:\/\/|mailto:)[^\s<>()]+[^\s<>().,;:!?'"]/;

  function renderInline(text, parent) {
    var buffer = "";
    function flush() {
      if (buffer) {
        parent.appendChild(document.createTextNode(buffer));
        buffer = "";
      }
    }
    var i = 0;
    while (i < text.length) {
      var c = text.charAt(i);
      var rest = text.slice(i);
      var end, match;
      if (c === "\\" && i + 1 < text.length && /[\\`*_[\]()!#-]/.test(text.charAt(i + 1))) {
        buffer += text.charAt(i + 1);
        i += 2;
        continue;
      }
      if (c === "`") {
        end = text.indexOf("`", i + 1);
        if (end > i + 1) {
          flush();
          parent.appendChild(el("code", { text: text.slice(i + 1, end) }));
          i = end + 1;
          continue;
        }
      }
      // **strong** (or __strong__), then *em* (or _em_ not inside a word, as in snake_case).
      var marker = c === "*" || c === "_" ? (text.charAt(i + 1) === c ? c + c : c) : "";
      end = marker ? text.indexOf(marker, i + marker.length) : -1;
      if (
        end > i + marker.length &&
        (marker.length === 2 ||
          (/\S/.test(text.charAt(i + 1)) &&
            /\S/.test(text.charAt(end - 1)) &&
            (c === "*" || (!/\w/.test(text.charAt(i - 1)) && !/\w/.test(text.charAt(end + 1))))))
      ) {
        flush();
        var wrapper = el(marker.length === 2 ? "strong" : "em");
        renderInline(text.slice(i + marker.length, end), wrapper);
        parent.appendChild(wrapper);
        i = end + marker.length;
        continue;
      }
      if (c === "!" && text.charAt(i + 1) === "[" && (match = LINK_RE.exec(rest.slice(1)))) {
        // Images are never loaded (tracking pixels, remote content): a link instead.
        flush();
        link(match[1] || "image", match[2], parent);
        i += 1 + match[0].length;
        continue;
      }
      if (c === "[" && (match = LINK_RE.exec(rest))) {
        flush();
        link(match[1] || match[2], match[2], parent);
        i += match[0].length;
        continue;
      }
      if ((c === "h" || c === "m") && !/\w/.test(text.charAt(i - 1)) && (match = AUTOLINK_RE.exec(rest))) {
        flush();
        link(match[0], match[0], parent);
        i += match[0].length;
        continue;
      }
      buffer += c;
      i += 1;
    }
    flush();
  }

  function renderParagraph(lines, parent, tag) {
    var p = el(tag || "p");
    lines.forEach(function (line, index) {
      if (index) {
        p.appendChild(el("br"));
      }
      renderInline(line, p);
    });
    parent.appendChild(p);
  }

  function renderMarkdown(source, parent) {
    var lines = String(source).replace(/\r\n?/g, "\n").split("\n");
    var paragraph = [];
    var list = null;
    var listOrdered = false;
    function endParagraph() {
      if (paragraph.length) {
        renderParagraph(paragraph, parent);
        paragraph = [];
      }
    }
    function endList() {
      list = null;
    }
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      var fence = /^\s*(```|~~~)/.exec(line);
      if (fence) {
        endParagraph();
        endList();
        var code = [];
        i += 1;
        while (i < lines.length && lines[i].trim().indexOf(fence[1]) !== 0) {
          code.push(lines[i]);
          i += 1;
        }
        parent.appendChild(el("pre", null, [el("code", { text: code.join("\n") })]));
        continue;
      }
      if (!line.trim()) {
        endParagraph();
        endList();
        continue;
      }
      var heading = /^\s{0,3}#{1,6}\s+(.*)$/.exec(line);
      if (heading) {
        endParagraph();
        endList();
        var h = el("p", { className: "heading" });
        var strong = el("strong");
        renderInline(heading[1].replace(/\s+#+\s*$/, ""), strong);
        h.appendChild(strong);
        parent.appendChild(h);
        continue;
      }
      var bullet = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line);
      if (bullet) {
        endParagraph();
        var ordered = /\d/.test(bullet[1]);
        if (!list || listOrdered !== ordered) {
          list = el(ordered ? "ol" : "ul");
          listOrdered = ordered;
          if (ordered && parseInt(bullet[1], 10) !== 1) {
            list.setAttribute("start", String(parseInt(bullet[1], 10)));
          }
          parent.appendChild(list);
        }
        var item = el("li");
        renderInline(bullet[2], item);
        list.appendChild(item);
        continue;
      }
      if (list && /^\s{2,}\S/.test(line)) {
        // A continuation line of the last item.
        var last = list.lastChild;
        last.appendChild(el("br"));
        renderInline(line.trim(), last);
        continue;
      }
      endList();
      paragraph.push(line);
    }
    endParagraph();
  }

  // --- styles ------------------------------------------------------------------------
  function readableOn(hex) {
    var value = hex.replace("#", "");
    if (value.length === 3) {
      value = value.replace(/(.)/g, "$1$1");
    }
    var channels = [0, 2, 4].map(function (start) {
      var c = parseInt(value.substr(start, 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var luminance = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
    // Pick whichever of white or near-black contrasts more with the accent colour.
    return (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) ? "#111827" : "#ffffff";
  }

  var CSS = [
    // The host element is in the host page: host rules may target it, so every
    // declaration here is !important (inside beats outside for important rules).
    ":host{all:initial!important;display:block!important;position:static!important;width:0!important;",
    "height:0!important;overflow:visible!important;visibility:visible!important;opacity:1!important;",
    "pointer-events:auto!important;contain:none!important;transform:none!important;filter:none!important;",
    // `all` leaves direction alone: a right-to-left host page would mirror the panel.
    // Messages still follow their own script (dir=auto).
    "direction:ltr!important;unicode-bidi:isolate!important;}",
    ".root{--cb-accent:#2563eb;--cb-on-accent:#fff;font-family:system-ui,-apple-system,'Segoe UI',Roboto,",
    "'Helvetica Neue',Arial,sans-serif;font-size:15px;line-height:1.45;color:#111827;-webkit-font-smoothing:antialiased;}",
    ".root *,.root *::before,.root *::after{box-sizing:border-box;}",
    ".launcher{position:fixed;bottom:20px;right:20px;z-index:2147483647;display:flex;align-items:center;gap:8px;",
    "min-width:56px;height:56px;padding:0 16px;border:0;border-radius:28px;background:var(--cb-accent);",
    "color:var(--cb-on-accent);font:inherit;font-weight:600;cursor:pointer;box-shadow:0 6px 24px rgba(0,0,0,.22);}",
    ".left .launcher{right:auto;left:20px;}",
    ".launcher svg{width:24px;height:24px;fill:currentColor;flex:none;}",
    ".launcher:focus-visible,.root button:focus-visible,.root textarea:focus-visible,.root input:focus-visible,",
    ".root a:focus-visible,.log:focus-visible{outline:3px solid #1d4ed8;outline-offset:2px;}",
    ".panel{position:fixed;bottom:88px;right:20px;z-index:2147483647;display:flex;flex-direction:column;",
    "width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 108px);background:#fff;",
    "border-radius:16px;overflow:hidden;box-shadow:0 12px 48px rgba(0,0,0,.28);}",
    ".left .panel{right:auto;left:20px;}",
    ".panel[hidden],.root [hidden]{display:none!important;}",
    ".header{display:flex;align-items:center;gap:10px;padding:14px 16px;background:var(--cb-accent);",
    "color:var(--cb-on-accent);flex:none;}",
    ".avatar{width:32px;height:32px;border-radius:50%;object-fit:cover;background:rgba(255,255,255,.3);flex:none;}",
    ".title{margin:0;font-size:16px;font-weight:700;flex:1;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;}",
    ".close{display:flex;align-items:center;justify-content:center;width:36px;height:36px;border:0;border-radius:8px;",
    "background:transparent;color:inherit;cursor:pointer;flex:none;}",
    ".close svg{width:20px;height:20px;stroke:currentColor;stroke-width:2.5;fill:none;}",
    ".banner{padding:8px 16px;background:#fef3c7;color:#78350f;font-size:13px;flex:none;}",
    ".banner.fatal{background:#fee2e2;color:#7f1d1d;}",
    ".log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:10px;background:#f9fafb;}",
    ".msg{max-width:85%;padding:10px 12px;border-radius:14px;word-wrap:break-word;overflow-wrap:anywhere;}",
    ".msg.bot{align-self:flex-start;background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px;}",
    ".msg.user{align-self:flex-end;background:var(--cb-accent);color:var(--cb-on-accent);border-bottom-right-radius:4px;",
    "white-space:pre-wrap;}",
    ".msg.user.pending{opacity:.7;}",
    ".msg.user.failed{background:#fee2e2;color:#7f1d1d;}",
    ".msg .status{display:block;margin-top:4px;font-size:12px;opacity:.85;}",
    ".msg p{margin:0 0 8px;}.msg p:last-child{margin-bottom:0;}",
    ".msg ul,.msg ol{margin:0 0 8px;padding-left:20px;}",
    ".msg code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;",
    "background:#f3f4f6;padding:1px 4px;border-radius:4px;}",
    ".msg pre{margin:0 0 8px;padding:10px;background:#111827;color:#f9fafb;border-radius:8px;overflow-x:auto;}",
    ".msg pre code{background:none;padding:0;color:inherit;white-space:pre;}",
    ".msg a{color:#1d4ed8;text-decoration:underline;}",
    ".msg .note{display:block;margin-top:6px;font-size:12px;color:#6b7280;}",
    ".sources{margin:8px 0 0;padding:8px 0 0 0;border-top:1px solid #e5e7eb;font-size:13px;list-style:none;}",
    ".sources-label{display:block;font-size:12px;font-weight:600;color:#6b7280;margin-bottom:2px;}",
    ".sources li{margin:2px 0;color:#374151;}",
    ".notice{align-self:center;max-width:90%;padding:6px 10px;border-radius:8px;background:#fee2e2;color:#7f1d1d;",
    "font-size:13px;text-align:center;}",
    ".typing{align-self:flex-start;display:flex;gap:4px;padding:12px 14px;background:#fff;border:1px solid #e5e7eb;",
    "border-radius:14px;border-bottom-left-radius:4px;}",
    ".typing span{width:7px;height:7px;border-radius:50%;background:#9ca3af;animation:cb-blink 1.2s infinite both;}",
    ".typing span:nth-child(2){animation-delay:.2s;}.typing span:nth-child(3){animation-delay:.4s;}",
    "@keyframes cb-blink{0%,80%,100%{opacity:.3}40%{opacity:1}}",
    "@media (prefers-reduced-motion:reduce){.typing span{animation:none;}}",
    ".suggestions{display:flex;flex-wrap:wrap;gap:6px;padding:0 16px 10px;background:#f9fafb;flex:none;}",
    ".chip{padding:6px 12px;border:1px solid var(--cb-accent);border-radius:16px;background:#fff;color:#111827;",
    "font:inherit;font-size:13px;cursor:pointer;text-align:left;}",
    ".composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid #e5e7eb;",
    "background:#fff;flex:none;}",
    ".composer textarea{flex:1;min-height:40px;max-height:120px;padding:9px 12px;border:1px solid #d1d5db;",
    "border-radius:10px;font:inherit;color:#111827;background:#fff;resize:none;}",
    ".send{display:flex;align-items:center;justify-content:center;width:40px;height:40px;border:0;border-radius:10px;",
    "background:var(--cb-accent);color:var(--cb-on-accent);cursor:pointer;flex:none;}",
    ".send svg{width:20px;height:20px;fill:currentColor;}",
    ".lead{display:flex;flex-direction:column;gap:8px;padding:12px 16px;border-top:1px solid #e5e7eb;background:#fff;}",
    ".lead p{margin:0;font-size:14px;}",
    ".lead label{display:flex;flex-direction:column;gap:2px;font-size:13px;color:#374151;}",
    ".lead label.consent{flex-direction:row;align-items:flex-start;gap:8px;}",
    ".lead input[type=checkbox]{width:18px;height:18px;margin:2px 0 0;flex:none;}",
    ".lead input{padding:8px 10px;border:1px solid #d1d5db;border-radius:8px;font:inherit;color:#111827;}",
    ".lead button{padding:10px;border:0;border-radius:8px;background:var(--cb-accent);color:var(--cb-on-accent);",
    "font:inherit;font-weight:600;cursor:pointer;}",
    ".lead .error{color:#b91c1c;font-size:13px;}",
    ".sr-only{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);",
    "white-space:nowrap;border:0;}",
    // Phones: the panel takes the whole screen and the launcher steps aside.
    "@media (max-width:480px){.panel,.left .panel{inset:0;width:100%;max-width:none;height:100%;max-height:none;",
    "border-radius:0;}.root.open .launcher{display:none;}}",
  ].join("");

  function applyStyles(shadow) {
    // A constructable stylesheet is not inline markup, so a host page's strict
    // `style-src` CSP does not block it; a <style> element is the fallback.
    if ("adoptedStyleSheets" in shadow && typeof CSSStyleSheet === "function") {
      try {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        shadow.adoptedStyleSheets = [sheet];
        return;
      } catch (e) {
        /* older engines: fall through */
      }
    }
    shadow.appendChild(el("style", { text: CSS }));
  }

  // --- the widget ----------------------------------------------------------------------
  function Widget(config) {
    this.config = config;
    this.socket = null;
    this.ready = false;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.stopped = false; // identity refused: no point reconnecting
    this.everConnected = false;
    this.unloading = false;
    this.inFlight = []; // client ids sent on this socket, not yet acked
    this.outbox = loadJSON("outbox", []); // [{client_id, text}] not yet acked, kept across reloads
    this.answers = {}; // message_id -> {node, text}
    this.leadPending = false;
    this.leadDone = load("lead") === "1";
    this.build();
  }

  Widget.prototype.build = function () {
    var config = this.config;
    var theme = config.theme || {};
    var host = document.createElement("chatbase-widget");
    host.setAttribute("data-bot", BOT_KEY);
    var shadow = host.attachShadow({ mode: "open" });
    applyStyles(shadow);
    this.host = host;
    this.shadow = shadow;

    var root = el("div", { className: "root" + (theme.position === "left" ? " left" : "") });
    root.setAttribute("data-state", "idle");
    var accent = /^#(?:[0-9a-fA-F]{3}){1,2}$/.test(theme.color || "") ? theme.color : "#2563eb";
    // CSSOM custom properties, not a style attribute: allowed under a strict CSP.
    root.style.setProperty("--cb-accent", accent);
    root.style.setProperty("--cb-on-accent", readableOn(accent));
    this.root = root;

    var title = config.title || config.name || "Chat";
    var launcherChildren = [icon(ICON_CHAT)];
    if (theme.launcher_text) {
      launcherChildren.push(el("span", { className: "launcher-text", text: theme.launcher_text }));
    }
    this.launcher = el(
      "button",
      {
        type: "button",
        className: "launcher",
        "aria-label": "Open chat: " + title,
        "aria-expanded": "false",
        "aria-controls": "cb-panel",
        "aria-haspopup": "dialog",
      },
      launcherChildren,
    );

    var header = el("div", { className: "header" });
    if (theme.avatar_url && safeHref(theme.avatar_url) && /^https?:/.test(theme.avatar_url)) {
      var avatar = el("img", { className: "avatar", alt: "", src: theme.avatar_url, referrerpolicy: "no-referrer" });
      avatar.addEventListener("error", function () {
        avatar.hidden = true;
      });
      header.appendChild(avatar);
    }
    header.appendChild(el("h2", { className: "title", id: "cb-title", text: title }));
    this.closeButton = el("button", { type: "button", className: "close", "aria-label": "Close chat" }, [
      icon(ICON_CLOSE),
    ]);
    header.appendChild(this.closeButton);

    this.banner = el("div", { className: "banner", role: "status" });
    this.banner.hidden = true;
    this.log = el("div", {
      className: "log",
      role: "log",
      "aria-live": "polite",
      "aria-relevant": "additions",
      "aria-label": "Conversation",
      tabindex: "0",
    });
    this.suggestions = el("div", { className: "suggestions", role: "group", "aria-label": "Suggested questions" });

    this.input = el("textarea", {
      id: "cb-input",
      rows: "1",
      placeholder: "Type your message…",
      "aria-label": "Message",
    });
    this.sendButton = el("button", { type: "submit", className: "send", "aria-label": "Send" }, [icon(ICON_SEND)]);
    this.composer = el("form", { className: "composer" }, [this.input, this.sendButton]);

    this.panel = el(
      "div",
      { className: "panel", id: "cb-panel", role: "dialog", "aria-modal": "true", "aria-labelledby": "cb-title" },
      [header, this.banner, this.log, this.suggestions],
    );
    if (config.lead_form && !this.leadDone) {
      this.buildLeadForm();
      this.panel.appendChild(this.leadForm);
      this.composer.hidden = true;
    }
    this.panel.appendChild(this.composer);
    this.panel.hidden = true;

    root.appendChild(this.launcher);
    root.appendChild(this.panel);
    shadow.appendChild(root);
    this.renderWelcome(config.welcome, config.suggestions);
    this.bind();
    (document.body || document.documentElement).appendChild(host);
    if (START_OPEN || load("open") === "1") {
      this.open(false);
    }
  };

  Widget.prototype.buildLeadForm = function () {
    var self = this;
    function field(label, name, type, autocomplete, required) {
      var input = el("input", { name: name, type: type, autocomplete: autocomplete });
      if (required) {
        input.required = true;
      }
      return el("label", null, [label, input]);
    }
    this.leadError = el("p", { className: "error", role: "alert" });
    this.leadError.hidden = true;
    this.leadForm = el("form", { className: "lead", "aria-label": "Before we start" }, [
      el("p", { text: "Before we start, how can we reach you?" }),
      field("Name", "name", "text", "name", true),
      field("E-mail", "email", "email", "email", true),
      field("Phone (optional)", "phone", "tel", "tel", false),
    ]);
    if (this.config.require_consent) {
      var consent = el("input", { name: "consent", type: "checkbox" });
      consent.required = true;
      this.leadForm.appendChild(el("label", { className: "consent" }, [consent, "I agree to be contacted about my enquiry."]));
    }
    [
      this.leadError,
      el("button", { type: "submit", text: "Start chat" }),
    ].forEach(function (node) {
      self.leadForm.appendChild(node);
    });
    this.leadForm.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submitLead();
    });
  };

  Widget.prototype.bind = function () {
    var self = this;
    this.launcher.addEventListener("click", function () {
      if (self.panel.hidden) {
        self.open(true);
      } else {
        self.close();
      }
    });
    this.closeButton.addEventListener("click", function () {
      self.close();
    });
    this.composer.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submitInput();
    });
    this.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        self.submitInput();
      }
    });
    this.input.addEventListener("input", function () {
      self.autosize();
    });
    this.panel.addEventListener("keydown", function (event) {
      self.onPanelKey(event);
    });
    window.addEventListener("online", function () {
      self.reconnectNow();
    });
    window.addEventListener("pagehide", function () {
      self.unloading = true;
    });
    window.addEventListener("pageshow", function (event) {
      // Back from the back/forward cache: the old socket is gone.
      self.unloading = false;
      if (event.persisted && !self.panel.hidden) {
        self.reconnectNow();
      }
    });
  };

  // --- opening, closing, keyboard ----------------------------------------------------
  Widget.prototype.open = function (focus) {
    this.panel.hidden = false;
    this.root.classList.add("open");
    this.launcher.setAttribute("aria-expanded", "true");
    save("open", "1");
    this.connect();
    this.scrollToEnd(true);
    if (focus) {
      var target = !this.leadForm || this.leadForm.hidden ? this.input : this.leadForm.querySelector("input");
      target.focus();
    }
  };

  Widget.prototype.close = function () {
    this.panel.hidden = true;
    this.root.classList.remove("open");
    this.launcher.setAttribute("aria-expanded", "false");
    save("open", null);
    this.launcher.focus();
  };

  Widget.prototype.focusables = function () {
    var nodes = this.panel.querySelectorAll("button, [href], textarea, input, select, [tabindex]:not([tabindex='-1'])");
    return Array.prototype.filter.call(nodes, function (node) {
      return !node.disabled && node.getClientRects().length > 0;
    });
  };

  Widget.prototype.onPanelKey = function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.close();
      return;
    }
    if (event.key !== "Tab") {
      return;
    }
    // Focus stays inside the open panel (a modal dialog) until Escape or the close button.
    var items = this.focusables();
    if (!items.length) {
      return;
    }
    var first = items[0];
    var last = items[items.length - 1];
    var active = this.shadow.activeElement;
    if (event.shiftKey && (active === first || items.indexOf(active) === -1)) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || items.indexOf(active) === -1)) {
      event.preventDefault();
      first.focus();
    }
  };

  Widget.prototype.autosize = function () {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight + 2, 120) + "px";
  };

  // --- the connection ---------------------------------------------------------------
  Widget.prototype.socketUrl = function () {
    var params = [];
    function add(name, value) {
      if (value) {
        params.push(encodeURIComponent(name) + "=" + encodeURIComponent(value));
      }
    }
    if (IDENTITY) {
      add("user_id", IDENTITY.user_id);
      add("user_hash", IDENTITY.user_hash);
      add("ts", IDENTITY.ts);
    } else {
      add("visitor", load("visitor"));
    }
    add("preview", PREVIEW);
    return WS_SERVER + "/ws/chat/" + encodeURIComponent(BOT_KEY) + "/" + (params.length ? "?" + params.join("&") : "");
  };

  Widget.prototype.setState = function (state) {
    this.root.setAttribute("data-state", state);
  };

  Widget.prototype.connect = function () {
    if (this.socket || this.stopped) {
      return;
    }
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    var self = this;
    var socket;
    try {
      socket = new WebSocket(this.socketUrl());
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.ready = false;
    this.setState("connecting");
    socket.addEventListener("message", function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (socket === self.socket && frame && typeof frame.type === "string") {
        self.onFrame(frame);
      }
    });
    socket.addEventListener("close", function () {
      if (socket !== self.socket) {
        return;
      }
      self.socket = null;
      self.ready = false;
      self.inFlight = [];
      self.hideTyping();
      if (self.stopped || self.unloading) {
        return;
      }
      self.setState("offline");
      self.showBanner(self.everConnected ? "Connection lost. Reconnecting…" : "Can't reach the chat right now. Retrying…");
      self.scheduleReconnect();
    });
  };

  Widget.prototype.scheduleReconnect = function () {
    var self = this;
    // Exponential backoff with full jitter: a restarted server is not stampeded.
    var ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * Math.pow(2, this.attempt));
    this.attempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(function () {
      self.reconnectTimer = null;
      self.connect();
    }, Math.random() * ceiling);
  };

  Widget.prototype.reconnectNow = function () {
    if (!this.socket && !this.stopped && this.everConnected) {
      this.attempt = 0;
      this.connect();
    }
  };

  Widget.prototype.send = function (frame) {
    if (this.socket && this.ready && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  };

  var HANDLERS = {
    "session.ready": "onReady",
    "message.ack": "onAck",
    "answer.delta": "onDelta",
    "answer.done": "onDone",
    "lead.saved": "onLeadSaved",
    error: "onError",
  };

  Widget.prototype.onFrame = function (frame) {
    // Newer servers may send more types: what we do not know is ignored.
    if (Object.prototype.hasOwnProperty.call(HANDLERS, frame.type)) {
      this[HANDLERS[frame.type]](frame);
    }
  };

  Widget.prototype.onReady = function (frame) {
    this.ready = true;
    this.attempt = 0;
    this.everConnected = true;
    this.setState("open");
    this.hideBanner();
    if (!IDENTITY && frame.visitor_token) {
      save("visitor", frame.visitor_token);
    }
    // The server's history is the truth: redraw from it, then what is still unsent.
    this.answers = {};
    this.clearLog();
    this.renderWelcome(frame.welcome || this.config.welcome, frame.suggestions || this.config.suggestions);
    var history = frame.history || [];
    for (var i = 0; i < history.length; i++) {
      var message = history[i];
      if (message.role === "user") {
        this.addUserMessage(message.text, { messageId: message.id });
      } else if (message.role === "assistant") {
        this.addAnswer(message.id, message.text, message.sources, message.incomplete);
      }
    }
    if (history.length) {
      this.hideSuggestions();
    }
    var pending = this.outbox.slice();
    for (var j = 0; j < pending.length; j++) {
      this.addUserMessage(pending[j].text, { clientId: pending[j].client_id, pending: true });
      this.transmit(pending[j]);
    }
    this.scrollToEnd(true);
  };

  Widget.prototype.onAck = function (frame) {
    var clientId = frame.client_id;
    this.inFlight = this.inFlight.filter(function (id) {
      return id !== clientId;
    });
    this.outbox = this.outbox.filter(function (item) {
      return item.client_id !== clientId;
    });
    save("outbox", this.outbox.length ? JSON.stringify(this.outbox) : null);
    var bubble = clientId ? this.log.querySelector('[data-client-id="' + cssEscape(clientId) + '"]') : null;
    if (!bubble) {
      return;
    }
    if (this.log.querySelector('[data-message-id="' + frame.message_id + '"]')) {
      bubble.remove(); // already shown from the history (the first ack was lost)
      return;
    }
    bubble.classList.remove("pending");
    bubble.setAttribute("data-message-id", String(frame.message_id));
    var status = bubble.querySelector(".status");
    if (status) {
      status.remove();
    }
    this.showTyping();
  };

  Widget.prototype.onDelta = function (frame) {
    var answer = this.answers[frame.message_id];
    if (!answer) {
      answer = this.addAnswer(frame.message_id, "", null, false);
      // Screen readers hear the finished answer once, not every token.
      this.log.setAttribute("aria-busy", "true");
    }
    this.hideTyping();
    answer.text += frame.delta || "";
    this.renderAnswer(answer, answer.text, null, false);
    this.scrollToEnd(false);
  };

  Widget.prototype.onDone = function (frame) {
    var answer = this.answers[frame.message_id] || this.addAnswer(frame.message_id, "", null, false);
    answer.text = frame.text || answer.text;
    this.renderAnswer(answer, answer.text, frame.sources, frame.incomplete);
    this.log.removeAttribute("aria-busy");
    this.hideTyping();
    this.scrollToEnd(false);
  };

  var ERROR_TEXT = {
    rate_limited: "You're sending messages too quickly. Please wait a moment and try again.",
    too_long: "That message is too long. Please shorten it and try again.",
    unavailable: "The assistant is unavailable right now. Please try again in a moment.",
    not_authenticated: "We couldn't verify your sign-in, so the chat is unavailable. Reload the page to try again.",
  };

  Widget.prototype.onError = function (frame) {
    var code = frame.code || "invalid";
    var text = ERROR_TEXT[code] || frame.detail || "Something went wrong.";
    if (code === "rate_limited" && frame.retry_after) {
      text = "You're sending messages too quickly. Try again in " + frame.retry_after + " s.";
    }
    this.hideTyping();
    this.log.removeAttribute("aria-busy");
    if (code === "not_authenticated") {
      this.stopped = true;
      this.setState("refused");
      this.showBanner(text, true);
      return;
    }
    if (this.leadPending) {
      this.leadPending = false;
      this.leadError.textContent = frame.detail || text;
      this.leadError.hidden = false;
      return;
    }
    if (this.inFlight.length && code !== "unavailable") {
      // The oldest message awaiting its ack was refused and not stored: give it back.
      var clientId = this.inFlight.shift();
      this.outbox = this.outbox.filter(function (item) {
        return item.client_id !== clientId;
      });
      save("outbox", this.outbox.length ? JSON.stringify(this.outbox) : null);
      var bubble = this.log.querySelector('[data-client-id="' + cssEscape(clientId) + '"]');
      if (bubble) {
        bubble.classList.remove("pending");
        bubble.classList.add("failed");
        this.setStatus(bubble, "Not sent. " + text);
        if (!this.input.value) {
          this.input.value = bubble.firstChild.textContent;
          this.autosize();
        }
      }
      return;
    }
    this.addNotice(text);
  };

  // --- sending -----------------------------------------------------------------------
  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      })
      .join("");
  }

  Widget.prototype.submitInput = function () {
    var text = this.input.value.trim();
    if (!text) {
      return;
    }
    this.input.value = "";
    this.autosize();
    this.sendText(text);
  };

  Widget.prototype.sendText = function (text) {
    var item = { client_id: newClientId(), text: text };
    // Kept until acked: typed offline, it goes out once the socket is back (the
    // server stores a client_id once, so a resend is never answered twice).
    this.outbox.push(item);
    save("outbox", JSON.stringify(this.outbox));
    this.hideSuggestions();
    this.addUserMessage(text, { clientId: item.client_id, pending: true });
    this.scrollToEnd(true);
    if (!this.transmit(item)) {
      this.connect();
    }
  };

  Widget.prototype.transmit = function (item) {
    var bubble = this.log.querySelector('[data-client-id="' + cssEscape(item.client_id) + '"]');
    if (this.send({ type: "message.send", text: item.text, client_id: item.client_id })) {
      this.inFlight.push(item.client_id);
      if (bubble) {
        this.setStatus(bubble, null);
      }
      return true;
    }
    if (bubble) {
      this.setStatus(bubble, "Waiting for connection…");
    }
    return false;
  };

  Widget.prototype.submitLead = function () {
    var form = this.leadForm;
    var values = {};
    ["name", "email", "phone"].forEach(function (name) {
      var value = form.elements[name].value.trim();
      if (value) {
        values[name] = value;
      }
    });
    this.leadError.hidden = true;
    if (!form.checkValidity()) {
      form.reportValidity();
      return;
    }
    if (form.elements.consent) {
      values.consent = form.elements.consent.checked;
    }
    values.type = "lead.submit";
    if (!this.send(values)) {
      this.leadError.textContent = "Not connected yet. Please try again in a moment.";
      this.leadError.hidden = false;
      this.connect();
      return;
    }
    this.leadPending = true;
  };

  Widget.prototype.onLeadSaved = function () {
    this.leadPending = false;
    this.leadDone = true;
    save("lead", "1");
    if (this.leadForm) {
      this.leadForm.hidden = true;
    }
    this.composer.hidden = false;
    if (this.suggestions.firstChild && !this.log.querySelector(".msg.user")) {
      this.suggestions.hidden = false;
    }
    this.input.focus();
  };

  // --- rendering ---------------------------------------------------------------------
  Widget.prototype.clearLog = function () {
    while (this.log.firstChild) {
      this.log.removeChild(this.log.firstChild);
    }
    this.typing = null;
  };

  Widget.prototype.renderWelcome = function (welcome, suggestions) {
    if (welcome) {
      var bubble = el("div", { className: "msg bot welcome" });
      renderMarkdown(welcome, bubble);
      this.log.appendChild(bubble);
    }
    var self = this;
    while (this.suggestions.firstChild) {
      this.suggestions.removeChild(this.suggestions.firstChild);
    }
    (suggestions || []).forEach(function (text) {
      var chip = el("button", { type: "button", className: "chip", text: text });
      chip.addEventListener("click", function () {
        self.sendText(text);
      });
      self.suggestions.appendChild(chip);
    });
    // Behind the lead form the chips would skip it: they show once it is done.
    this.suggestions.hidden = !(suggestions && suggestions.length) || this.leadRequired();
  };

  Widget.prototype.leadRequired = function () {
    return !!(this.leadForm && !this.leadForm.hidden);
  };

  Widget.prototype.hideSuggestions = function () {
    this.suggestions.hidden = true;
  };

  Widget.prototype.addUserMessage = function (text, options) {
    var bubble = el("div", { className: "msg user" + (options.pending ? " pending" : "") }, [
      el("span", { className: "text", text: text, dir: "auto" }),
    ]);
    if (options.clientId) {
      bubble.setAttribute("data-client-id", options.clientId);
    }
    if (options.messageId) {
      bubble.setAttribute("data-message-id", String(options.messageId));
    }
    this.insertBeforeTyping(bubble);
    return bubble;
  };

  Widget.prototype.setStatus = function (bubble, text) {
    var status = bubble.querySelector(".status");
    if (!text) {
      if (status) {
        status.remove();
      }
      return;
    }
    if (!status) {
      status = el("span", { className: "status" });
      bubble.appendChild(status);
    }
    status.textContent = text;
  };

  Widget.prototype.addAnswer = function (messageId, text, sources, incomplete) {
    var node = el("div", { className: "msg bot answer", "data-message-id": String(messageId) });
    var answer = { node: node, text: text || "" };
    this.answers[messageId] = answer;
    this.insertBeforeTyping(node);
    this.renderAnswer(answer, answer.text, sources, incomplete);
    return answer;
  };

  Widget.prototype.renderAnswer = function (answer, text, sources, incomplete) {
    var node = answer.node;
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
    var body = el("div", { className: "body", dir: "auto" });
    renderMarkdown(text, body);
    node.appendChild(body);
    if (incomplete) {
      node.appendChild(el("span", { className: "note", text: "(This answer was interrupted.)" }));
    }
    if (sources && sources.length) {
      node.appendChild(el("span", { className: "sources-label", text: "Sources" }));
      var list = el("ol", { className: "sources", "aria-label": "Sources" });
      sources.forEach(function (source, index) {
        var item = el("li");
        var number = source.number || index + 1;
        item.appendChild(document.createTextNode("[" + number + "] "));
        link(source.document_title || source.url || "Source " + number, source.url || "", item);
        if (source.snippet) {
          item.setAttribute("title", source.snippet);
        }
        list.appendChild(item);
      });
      node.appendChild(list);
    }
  };

  Widget.prototype.addNotice = function (text) {
    this.insertBeforeTyping(el("div", { className: "notice", role: "alert", text: text }));
    this.scrollToEnd(true);
  };

  Widget.prototype.insertBeforeTyping = function (node) {
    if (this.typing && this.typing.parentNode === this.log) {
      this.log.insertBefore(node, this.typing);
    } else {
      this.log.appendChild(node);
    }
  };

  Widget.prototype.showTyping = function () {
    if (this.typing) {
      return;
    }
    this.typing = el("div", { className: "typing", "aria-label": "The assistant is typing" }, [
      el("span"),
      el("span"),
      el("span"),
    ]);
    this.log.appendChild(this.typing);
    this.scrollToEnd(false);
  };

  Widget.prototype.hideTyping = function () {
    if (this.typing) {
      this.typing.remove();
      this.typing = null;
    }
  };

  Widget.prototype.showBanner = function (text, fatal) {
    this.banner.textContent = text;
    this.banner.classList.toggle("fatal", !!fatal);
    this.banner.hidden = false;
  };

  Widget.prototype.hideBanner = function () {
    this.banner.hidden = true;
  };

  Widget.prototype.scrollToEnd = function (force) {
    var log = this.log;
    // Follow new text only if the visitor has not scrolled up to read.
    if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 80) {
      log.scrollTop = log.scrollHeight;
    }
  };

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : String(value).replace(/["\\]/g, "\\$&");
  }

  // --- start ---------------------------------------------------------------------------
  function fetchConfig(attempt) {
    var url = SERVER + "/api/v1/widget/" + encodeURIComponent(BOT_KEY) + "/config/";
    fetch(url, { credentials: "omit", mode: "cors" })
      .then(function (response) {
        if (response.status === 404) {
          warn("no active bot has the public key " + BOT_KEY + ".");
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (config) {
        if (config) {
          registry[BOT_KEY] = new Widget(config);
        }
      })
      .catch(function (error) {
        // A page on an origin the bot does not allow fails here (CORS), as does a
        // server that is down: retry a few times, then stay out of the page.
        if (attempt + 1 >= CONFIG_ATTEMPTS) {
          warn("could not load the bot's settings (" + error.message + "); is this site in its allowed origins?");
          return;
        }
        setTimeout(
          function () {
            fetchConfig(attempt + 1);
          },
          Math.random() * Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * Math.pow(2, attempt + 1)),
        );
      });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      fetchConfig(0);
    });
  } else {
    fetchConfig(0);
  }
})();
