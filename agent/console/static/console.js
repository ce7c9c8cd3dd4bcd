// SafeEdge console: live fragments over Server-Sent Events, forms with the CSRF token,
// a WebAudio cue for a new level-2 alarm (mutable, remembered in localStorage).
// No framework, no build step, nothing loaded from the internet.
"use strict";
(function () {
  const main = document.getElementById("content");
  const csrf = document.querySelector('meta[name="csrf"]');
  const muteBtn = document.getElementById("mute");
  let muted = localStorage.getItem("safeedge-muted") === "1";
  let known = null; // level-2 unacked keys already seen (null: first fragment, no cue)
  let audio = null;
  let pending = null; // a fragment held back while the operator types

  function showMute() {
    if (muteBtn) muteBtn.textContent = muted ? muteBtn.dataset.unmute : muteBtn.dataset.mute;
    document.body.dataset.muted = muted ? "1" : "0";
  }
  if (muteBtn) {
    muteBtn.addEventListener("click", function () {
      muted = !muted;
      localStorage.setItem("safeedge-muted", muted ? "1" : "0");
      showMute();
    });
  }
  showMute();

  function beep() {
    document.body.dataset.cues = String(Number(document.body.dataset.cues || "0") + 1);
    if (muted) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const t = audio.currentTime;
      for (let i = 0; i < 3; i++) {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = "square";
        osc.frequency.value = i % 2 ? 660 : 880;
        gain.gain.setValueAtTime(0.2, t + i * 0.3);
        gain.gain.setValueAtTime(0, t + i * 0.3 + 0.2);
        osc.connect(gain).connect(audio.destination);
        osc.start(t + i * 0.3);
        osc.stop(t + i * 0.3 + 0.25);
      }
    } catch (e) { /* no audio device: the visual cue stays */ }
  }

  function applied() {
    const board = document.getElementById("board");
    document.body.dataset.updatedMs = String(Date.now());
    if (!board) return;
    const keys = (board.dataset.l2 || "").split(" ").filter(Boolean);
    if (known !== null && keys.some(function (k) { return !known.has(k); })) beep();
    known = new Set(keys);
  }

  function wire() {
    main.querySelectorAll("form.act").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        const body = new URLSearchParams(new FormData(form));
        fetch(form.action, {
          method: "POST", body: body, credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf ? csrf.content : "" },
        }).then(function (r) {
          if (!r.ok) return r.text().then(function (t) { alert(t); });
          return null;
        });
      });
    });
  }

  applied();
  wire();
  const which = main.dataset.page;
  if (window.EventSource && which) {
    const es = new EventSource("/events?page=" + encodeURIComponent(which));
    es.onmessage = function (ev) {
      // keep what the operator is typing: skip a redraw while a field of the board has focus
      const focused = document.activeElement;
      if (focused && main.contains(focused) && focused.tagName === "INPUT") {
        pending = ev.data;
        return;
      }
      main.innerHTML = ev.data;
      applied();
      wire();
    };
    es.addEventListener("cells", function (ev) {
      // live values between sparkline steps: [class, value, quality, time] per row, in order
      const rows = main.querySelectorAll("#live tr[data-tag]");
      const cells = JSON.parse(ev.data);
      for (let i = 0; i < cells.length && i < rows.length; i++) {
        const r = rows[i], c = cells[i];
        if (r.className !== c[0]) r.className = c[0];
        r.cells[1].textContent = c[1];
        r.cells[3].textContent = c[2];
        r.cells[5].textContent = c[3];
      }
      applied();
    });
    es.onerror = function () { document.body.dataset.stream = "lost"; };
    es.onopen = function () { document.body.dataset.stream = "open"; };
  }
  document.addEventListener("focusout", function () {
    setTimeout(function () {
      if (pending !== null && !(document.activeElement && document.activeElement.tagName === "INPUT")) {
        main.innerHTML = pending;
        pending = null;
        applied();
        wire();
      }
    }, 0);
  });
})();
