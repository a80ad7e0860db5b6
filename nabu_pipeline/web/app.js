// Warren's phone app: the official Pipecat web client (nabu-client.js) behind one big button.
//
// Pairing: a link /#pair=TOKEN stores the server's address and this phone's own token in
// localStorage and removes the token from the address bar. Connecting: a WebSocket to /ws with
// ?token= (browsers cannot set headers) and ?session= (the conversation to resume). Never
// stranded: a dropped connection is retried by itself for as long as the app is open, resuming the
// same session; in the background the microphone is released and the connection closed, and both
// come back when the app does. Every event is logged as `nabu-event {json}` and kept in
// window.nabuEvents (the browser tests read them).
"use strict";
(() => {
  const { PipecatClient, WebSocketTransport, WavMediaManager } = NabuClient;
  const $ = (id) => document.getElementById(id);
  const saved = {
    get: (key) => localStorage.getItem("nabu-" + key),
    set: (key, value) => localStorage.setItem("nabu-" + key, value),
  };
  const RETRY_MAX_MS = 10000;        // reconnect attempts back off to at most this
  const UNREACHABLE_AFTER = 3;        // failed attempts before the "cannot reach" advice shows
  const THINKING_LIMIT_MS = 20000;    // no answer by then: show Listening again (no error)
  const QUIET_GAP_MS = 2000;          // a reconnection quicker than this is not worth a word
                                      // (the server closes a silent session every few minutes)

  let client = null;          // the PipecatClient of the current connection
  let mediaManager = null;
  let wanted = false;         // Warren started the app (and has not been told to stop trying)
  let attempts = 0;           // failed connection attempts in a row
  let everReady = false;      // a connection has worked in this app run
  let lostAt = 0;             // when the working connection dropped (0: it has not)
  let quietTimer = null;
  const outage = () => lostAt !== 0 && performance.now() - lostAt >= QUIET_GAP_MS;
  let retryTimer = null, thinkingTimer = null, wakeLock = null;
  let mode = saved.get("mode") === "hold" ? "hold" : "handsfree";
  let paused = false;         // hands-free, paused by the big button
  let held = false;           // hold-to-talk: the big button is down
  let userText = "", botText = "", replyDone = true;
  let serverSaid = "";        // the last error the server gave for refusing a connection
  window.nabuEvents = [];

  function emit(type, data = {}) {
    const event = { type, t: performance.now() / 1000, ...data };
    window.nabuEvents.push(event);
    console.log("nabu-event " + JSON.stringify(event));
  }

  // --- pairing ------------------------------------------------------------------------------
  function takePairingLink() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("pair");
    if (!token) return;
    saved.set("token", token);
    saved.set("server", location.origin);
    history.replaceState(null, "", location.pathname + location.search);
    emit("paired");
  }

  function wsUrl() {
    const url = new URL("ws", saved.get("server") || location.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const session = saved.get("session");
    if (session) url.searchParams.set("session", session);
    return url.toString();
  }

  // --- what the screen says -----------------------------------------------------------------
  const WORDS = {
    idle: "Ready",
    connecting: "Connecting",
    listening: "Listening",
    thinking: "Thinking",
    speaking: "Speaking",
    paused: "Paused",
    reconnecting: "Reconnecting",
    problem: "Problem",
  };
  let state = "idle";

  function show(next, detail) {
    if (next !== state) emit("state", { state: next });
    state = next;
    document.body.dataset.state = next;
    $("status-word").textContent = next === "paused" && mode === "hold" ? "Ready" : WORDS[next];
    if (detail !== undefined) $("status-detail").textContent = detail;
    else $("status-detail").textContent = defaultDetail(next);
    updateControls();
  }

  function defaultDetail(s) {
    switch (s) {
      case "idle": return "Tap the big button to start talking to Nabu.";
      case "connecting": return "Getting ready…";
      case "listening":
        return mode === "hold" ? "Let go of the button when you have finished." : "Go ahead and talk. Take your time.";
      case "thinking": return "Nabu heard you and is working out the answer.";
      case "speaking": return "Nabu is answering. Say “stop”, or tap Stop.";
      case "paused": return mode === "hold" ? "Hold the big button to talk." : "Nabu is not listening. Tap “Listen again”.";
      case "reconnecting": return "The connection dropped. Nabu is trying again by itself.";
      default: return "";
    }
  }

  function problem(title, html) {
    $("problem-title").textContent = title;
    $("problem-text").innerHTML = html;
    $("problem").hidden = false;
  }
  function clearProblem() { $("problem").hidden = true; }

  function setSaid() {
    $("you-said").textContent = userText || "…";
    $("nabu-said").textContent = botText || "…";
  }

  function updateControls() {
    const big = $("big"), label = $("big-label");
    const live = client !== null && ["listening", "thinking", "speaking", "paused"].includes(state);
    big.removeAttribute("aria-pressed");
    if (!live) {
      label.textContent = state === "idle" ? "Start talking" : "Try again now";
    } else if (mode === "hold") {
      label.textContent = held ? "Listening… let go when done" : "Hold to talk";
      big.setAttribute("aria-pressed", held ? "true" : "false");
    } else {
      label.textContent = paused ? "Listen again" : "Pause listening";
    }
    $("stop").hidden = !live;
    for (const input of document.querySelectorAll('input[name="mode"]')) input.checked = input.value === mode;
    document.body.dataset.mode = mode;
  }

  // Listening, or Paused when the microphone is closed by the mode.
  function idleListening(detail) {
    show(micOpen() ? "listening" : "paused", detail);
  }

  // --- microphone gate: hands-free is always open unless paused; hold-to-talk while held -------
  function micOpen() { return mode === "handsfree" ? !paused : held; }

  let botSamples = 0;  // Nabu's audio received in this app run (the tests check it)
  class GatedWavMediaManager extends WavMediaManager {
    setUserAudioCallback(callback) {
      // A closed gate sends silence rather than nothing: the server's VAD then ends the turn.
      super.setUserAudioCallback((data) => callback(micOpen() ? data : new ArrayBuffer(data.byteLength)));
    }
    bufferBotAudio(data, id) {
      botSamples += data.byteLength / 2;
      return super.bufferBotAudio(data, id);
    }
  }

  // --- connection ---------------------------------------------------------------------------
  async function microphoneAllowed() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      problem("This page is not secure",
        "<p>The phone gives the microphone only to secure (https) pages.</p>" +
        "<p>Ask your helper to set up Nabu with https (see Nabu's README).</p>");
      emit("problem", { kind: "insecure" });
      return false;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      stream.getTracks().forEach((t) => t.stop());
      return true;
    } catch (e) {
      const name = e && e.name;
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        problem("No microphone found",
          "<p>Nabu can't find a microphone on this phone.</p>" +
          "<ol><li>Unplug and plug in any headset again.</li><li>Then tap <b>Try again now</b>.</li></ol>");
      } else if (name === "NotReadableError") {
        problem("The microphone is busy",
          "<p>Another app is using the microphone, perhaps a phone call.</p>" +
          "<ol><li>Finish the call or close the other app.</li><li>Then tap <b>Try again now</b>.</li></ol>");
      } else {
        problem("Nabu can't hear you",
          "<p>The microphone is switched off for Nabu.</p>" +
          "<ol><li>Tap the lock or the <b>i</b> sign next to the web address (or open the phone's " +
          "<b>Settings → Apps → Chrome → Permissions</b>).</li>" +
          "<li>Set <b>Microphone</b> to <b>Allow</b>.</li>" +
          "<li>Come back and tap <b>Try again now</b>.</li></ol>");
      }
      emit("problem", { kind: "microphone", error: String(name || e) });
      return false;
    }
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (!wanted || document.hidden || client) return;
    if (!everReady) show("connecting");
    else if (outage()) show("reconnecting");
    if (!(await microphoneAllowed())) {
      wanted = false;
      show("problem", "Nabu is not listening.");
      $("status-word").textContent = "Microphone off";
      return;
    }
    mediaManager = new GatedWavMediaManager(512, 16000);
    const transport = new WebSocketTransport({ mediaManager, recorderSampleRate: 16000 });
    let ready = false;
    const mine = () => client === c;
    const c = new PipecatClient({
      transport,
      enableMic: true,
      enableCam: false,
      callbacks: {
        onConnected: () => mine() && emit("connected"),
        onBotReady: () => {
          if (!mine()) return;
          ready = true;
          attempts = 0;
          clearProblem();
          emit("bot-ready");
          const back = outage();
          everReady = true;
          lostAt = 0;
          clearTimeout(quietTimer);
          serverSaid = "";
          idleListening(back ? "Connected again. Carry on where you left off." : undefined);
          keepScreenOn();
        },
        onDisconnected: () => { if (mine()) lost(ready); },
        onServerMessage: (data) => {
          if (!mine()) return;
          emit("server-message", { data });
          if (data && data.type === "nabu-session") saved.set("session", data.session);
        },
        onUserStartedSpeaking: () => {
          if (!mine()) return;
          emit("user-started-speaking");
          if (state === "thinking") idleListening();
        },
        onUserStoppedSpeaking: () => mine() && emit("user-stopped-speaking"),
        onUserTranscript: (data) => {
          if (!mine() || !data.final) return;
          emit("user-transcription", { text: data.text, final: true });
          if (replyDone) { userText = ""; botText = ""; replyDone = false; }
          userText = (userText + " " + data.text).trim();
          setSaid();
          show("thinking");
          clearTimeout(thinkingTimer);
          thinkingTimer = setTimeout(() => { if (state === "thinking") idleListening(); }, THINKING_LIMIT_MS);
        },
        onBotStartedSpeaking: () => {
          if (!mine()) return;
          emit("bot-started-speaking");
          clearTimeout(thinkingTimer);
          show("speaking");
        },
        onBotOutput: (data) => {
          if (!mine() || !data.spoken) return;
          emit("bot-output", { text: data.text, spoken: true });
          if (replyDone) { botText = ""; replyDone = false; }
          botText = (botText + " " + data.text).trim();
          setSaid();
        },
        onBotStoppedSpeaking: () => {
          if (!mine()) return;
          emit("bot-stopped-speaking", { bot_audio_samples: botSamples });
          replyDone = true;
          idleListening();
        },
        onError: (message) => {
          if (!mine()) return;
          const data = (message && message.data) || {};
          const error = data.error || data.message || String(message);
          emit("error", { error, fatal: !!data.fatal });
          if (data.fatal && !ready) serverSaid = error;
          if (/newer connection/.test(error)) {
            wanted = false;  // Nabu was opened elsewhere: do not fight over the conversation
            problem("Nabu is open somewhere else",
              "<p>This conversation carried on in another window or phone.</p>" +
              "<p>Tap <b>Try again now</b> to talk here instead.</p>");
          }
        },
      },
    });
    client = c;
    emit("connecting", { attempt: attempts + 1 });
    try {
      const token = saved.get("token");
      await c.connect({ wsUrl: wsUrl(), ...(token ? { token } : {}) });
    } catch (e) {
      if (mine()) lost(ready, String(e));
    }
  }

  async function lost(wasReady, why) {
    const c = client;
    client = null;
    mediaManager = null;
    releaseScreen();
    if (c) c.disconnect().catch(() => {});
    emit("disconnected", { was_ready: wasReady, why: why || "" });
    if (!wanted) {
      if (state !== "problem") show(everReady ? "problem" : "idle", everReady ? "Nabu is not listening." : undefined);
      updateControls();
      return;
    }
    if (document.hidden) return;  // comes back in onVisible
    attempts += wasReady ? 0 : 1;
    if (!lostAt) lostAt = performance.now();
    if (outage()) show("reconnecting");
    else {
      clearTimeout(quietTimer);
      quietTimer = setTimeout(() => {
        if (wanted && lostAt && state !== "problem") show("reconnecting");
      }, QUIET_GAP_MS);
    }
    if (attempts >= UNREACHABLE_AFTER) await explainUnreachable();
    const delay = Math.min(500 * 2 ** Math.max(attempts - 1, 0), RETRY_MAX_MS);
    retryTimer = setTimeout(connect, delay);
  }

  // The server refuses this phone (not paired, or revoked) or cannot be reached at all.
  async function explainUnreachable() {
    if (serverSaid) {
      problem("Nabu can't talk just now", "<p></p><p>Nabu keeps trying by itself.</p>");
      $("problem-text").firstChild.textContent = "Nabu says: " + serverSaid;
      emit("problem", { kind: "refused", error: serverSaid });
      return;
    }
    let up = false;
    try {
      const base = saved.get("server") || location.origin;
      up = (await fetch(new URL("healthz", base), { cache: "no-store" })).ok;
    } catch (e) { up = false; }
    if (up) {
      problem("This phone is not paired",
        "<p>Nabu is running, but it does not know this phone.</p>" +
        "<ol><li>Ask your helper to open Nabu's desk page on the Nabu computer.</li>" +
        "<li>Point this phone's camera at the square code, and open the link.</li></ol>");
      emit("problem", { kind: "not-paired" });
    } else {
      problem("Can't reach Nabu",
        "<p>Nabu keeps trying by itself. You don't need to do anything else.</p>" +
        "<ol><li>Check that the phone's Wi-Fi is on.</li>" +
        "<li>Check that the Nabu computer is switched on.</li></ol>");
      emit("problem", { kind: "unreachable" });
    }
  }

  async function start() {
    wanted = true;
    saved.set("started", "1");
    clearProblem();
    attempts = 0;
    await connect();
  }

  // --- the screen stays on while Nabu listens (where the phone allows it) --------------------
  async function keepScreenOn() {
    try { if ("wakeLock" in navigator && !wakeLock) wakeLock = await navigator.wakeLock.request("screen"); } catch (e) { wakeLock = null; }
  }
  function releaseScreen() { if (wakeLock) wakeLock.release().catch(() => {}); wakeLock = null; }

  // --- controls -----------------------------------------------------------------------------
  const big = $("big");
  big.addEventListener("click", () => {
    if (!client || !["listening", "thinking", "speaking", "paused"].includes(state)) return start();
    if (mode === "handsfree") {
      paused = !paused;
      emit(paused ? "paused" : "resumed");
      if (state !== "speaking" && state !== "thinking") idleListening();
      else updateControls();
    }
  });
  function hold(down) {
    if (mode !== "hold" || !client || held === down) return;
    held = down;
    emit(down ? "hold" : "release");
    if (state === "listening" || state === "paused") idleListening();
    else updateControls();
  }
  big.addEventListener("pointerdown", (e) => { if (mode === "hold" && client) { big.setPointerCapture(e.pointerId); hold(true); } });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) big.addEventListener(type, () => hold(false));
  big.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && mode === "hold" && client) { e.preventDefault(); if (!e.repeat) hold(true); } });
  big.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") hold(false); });
  big.addEventListener("contextmenu", (e) => e.preventDefault());

  // Before the first start the status band shows a "play" sign: tapping it starts too.
  $("status").addEventListener("click", () => { if (state === "idle") start(); });

  $("stop").addEventListener("click", () => {
    emit("stop-pressed");
    if (mediaManager) mediaManager.userStartedSpeaking();  // silence the speaker at once
    if (client) client.sendClientMessage("stop");           // and the same as saying "stop"
  });

  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.addEventListener("change", () => {
      mode = input.value === "hold" ? "hold" : "handsfree";
      saved.set("mode", mode);
      held = false;
      paused = false;
      emit("mode", { mode });
      if (state === "listening" || state === "paused") idleListening();
      else updateControls();
    });
  }

  // --- background: release the microphone; come back by itself --------------------------------
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      emit("hidden");
      if (client) {
        const c = client;
        client = null;
        mediaManager = null;
        releaseScreen();
        c.disconnect().catch(() => {});
        show("paused", "Nabu stopped listening while the app was in the background.");
      }
    } else {
      emit("visible");
      if (wanted) connect();
    }
  });
  window.addEventListener("online", () => { if (wanted && !client) connect(); });

  // --- start ----------------------------------------------------------------------------------
  takePairingLink();
  updateControls();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch((e) => emit("sw-error", { error: String(e) }));
  }
  // Start by itself when the phone lets the page play sound without a tap (an installed app);
  // otherwise the big "Start talking" button is the one tap needed.
  const probe = new AudioContext();
  const canPlay = probe.state === "running";
  probe.close();
  emit("loaded", { paired: !!saved.get("token"), autoplay: canPlay });
  if (canPlay && saved.get("started")) start();
})();
