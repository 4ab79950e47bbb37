// llm_magic's browser client for POST /api/chat: an ES module, no build step, no dependencies.
//
//   import { ChatClient } from "/static/client.js";
//   const chat = new ChatClient();                  // same origin; the page's cookie is the token
//   const done = await chat.send({messages: [{role: "user", content: "Hi"}], model: "local"}, {
//     content: (delta, text) => ..., usage: (u) => ..., error: (e) => ..., heartbeat: () => ...,
//   });
//   chat.stop();                                    // aborts the read and DELETEs the call
//
// The stream is read from `response.body` by SSEParser (the event-stream rules of the HTML
// standard: events split anywhere across network chunks, CRLF/LF/CR line ends, multi-line
// `data:` joined with "\n", comments reported as heartbeats, `id:`/`event:`/`retry:` fields).
// A connection that drops (a read error, or the body ending without `data: [DONE]`) is resumed
// with `GET /api/chat/<sid>` and `Last-Event-ID`, after a backoff with jitter; when the tries
// run out the answer so far is kept and an error of kind "interrupted" says "response
// interrupted".

export const DONE = "[DONE]";
export const INTERRUPTED = "response interrupted";

// One parser per response body. `feed(text)` takes decoded text in any pieces; `onEvent` hears
// each complete event as {id, event, data} (id: the last id seen on this stream, "" if none;
// event: "message" unless named); `onComment` hears each comment line's text (": ping" → "ping").
export class SSEParser {
  constructor({ onEvent = () => {}, onComment = () => {}, onRetry = () => {} } = {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.buffer = "";
    this.afterCR = false; // the last piece ended with "\r": a "\n" next is the same line end
    this.first = true; // a byte-order mark at the very start is dropped
    this.lastEventId = "";
    this._reset();
  }

  _reset() {
    this.data = [];
    this.hasData = false;
    this.type = "";
  }

  feed(text) {
    if (this.first && text.length) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (!text.length) return;
    if (this.afterCR && text[0] === "\n") text = text.slice(1);
    this.afterCR = false;
    let buf = this.buffer + text;
    let start = 0;
    for (;;) {
      const cr = buf.indexOf("\r", start);
      const lf = buf.indexOf("\n", start);
      let end;
      if (cr < 0 && lf < 0) break;
      if (cr < 0 || (lf >= 0 && lf < cr)) end = lf;
      else end = cr;
      const line = buf.slice(start, end);
      let next = end + 1;
      if (buf[end] === "\r") {
        if (next < buf.length) {
          if (buf[next] === "\n") next += 1;
        } else {
          this.afterCR = true; // "\r\n" may be split between two pieces
        }
      }
      this._line(line);
      start = next;
    }
    this.buffer = buf.slice(start);
  }

  // The body ended: an event not closed by a blank line is dropped (as the standard says).
  end() {
    this.buffer = "";
    this._reset();
  }

  _line(line) {
    if (line === "") return this._dispatch();
    if (line[0] === ":") {
      this.onComment(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") {
      this.type = value;
    } else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.onRetry(Number(value));
    } // other fields are ignored
  }

  _dispatch() {
    if (!this.hasData) {
      this._reset();
      return;
    }
    const event = { id: this.lastEventId, event: this.type || "message", data: this.data.join("\n") };
    this._reset();
    this.onEvent(event);
  }
}

// The number after the colon of an id "<sid>:<n>" (-1 when there is none).
export function eventNumber(id) {
  const at = id.lastIndexOf(":");
  const n = at < 0 ? NaN : Number(id.slice(at + 1));
  return Number.isInteger(n) ? n : -1;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

// What one answer came to: the text, its usage event (or null), its error event (or null),
// whether the stream ended with [DONE], whether stop() ended it, and how many reconnects it took.
export class ChatClient {
  constructor({ base = "", token = null, backoffMs = [250, 500, 1000, 2000], jitter = 0.3,
                fetchImpl = null } = {}) {
    this.base = base.replace(/\/$/, "");
    this.token = token;
    this.backoffMs = backoffMs;
    this.jitter = jitter;
    this.fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this.controller = null;
    this.sid = null;
    this.stopped = false;
  }

  _headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  // POST `body` to /api/chat and read the answer; `on` has optional callbacks content(delta,
  // text), tool_call(call), usage(u), error(e), heartbeat(), start(info), reconnect(try, ms).
  // `headers` may carry X-LLM-Agent / X-LLM-User. Resolves once the answer is over.
  async send(body, on = {}, { headers = {} } = {}) {
    this.controller = new AbortController();
    this.stopped = false;
    this.sid = null;
    const st = { text: "", usage: null, error: null, done: false, stopped: false, reconnects: 0,
                 last: "", lastN: -1, toolCalls: [] };
    const signal = this.controller.signal;
    let response;
    try {
      response = await this.fetch(`${this.base}/api/chat`, {
        method: "POST", signal, credentials: "same-origin",
        headers: this._headers({ "Content-Type": "application/json", ...headers }),
        body: JSON.stringify(body),
      });
    } catch (err) {
      return this._gaveUp(st, on, this.stopped ? null : `could not reach the server (${err.message})`);
    }
    if (!response.ok) return this._refused(st, on, response);
    await this._read(response, st, on);
    let tries = 0;
    while (!st.done && !this.stopped) {
      if (!this.sid || tries >= this.backoffMs.length) {
        return this._gaveUp(st, on, "the connection was lost");
      }
      const wait = this.backoffMs[tries] * (1 + this.jitter * Math.random());
      tries += 1;
      on.reconnect?.(tries, wait);
      await sleep(wait, signal);
      if (this.stopped) break;
      const before = st.lastN;
      const resumed = await this._resume(st, on);
      if (resumed === "gone") return st;
      if (st.lastN > before) tries = 0; // it got further: a later drop starts the backoff anew
    }
    st.stopped = this.stopped;
    return st;
  }

  async _resume(st, on) {
    let response;
    try {
      response = await this.fetch(`${this.base}/api/chat/${encodeURIComponent(this.sid)}`, {
        method: "GET", signal: this.controller.signal, credentials: "same-origin",
        headers: this._headers({ "Last-Event-ID": st.last, Accept: "text/event-stream" }),
      });
    } catch {
      return "failed";
    }
    st.reconnects += 1;
    if (response.status === 410 || response.status === 404) {
      const why = await this._message(response);
      this._gaveUp(st, on, why);
      return "gone";
    }
    if (!response.ok) return "failed";
    await this._read(response, st, on);
    return "read";
  }

  async _message(response) {
    try {
      const j = await response.json();
      return j.error || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  async _refused(st, on, response) {
    const message = await this._message(response);
    st.error = { message, kind: "usage", status: response.status, partial: "" };
    on.error?.(st.error);
    return st;
  }

  _gaveUp(st, on, why) {
    st.stopped = this.stopped;
    if (this.stopped || st.done) return st;
    st.error = { message: `${INTERRUPTED}: ${why}`, kind: "interrupted", partial: st.text };
    on.error?.(st.error);
    return st;
  }

  // Read one response body to its end (or a read error); events already seen are skipped.
  async _read(response, st, on) {
    const parser = new SSEParser({
      onEvent: (ev) => this._event(ev, st, on),
      onComment: (text) => on.heartbeat?.(text),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
        if (st.done) break;
      }
      parser.feed(decoder.decode());
    } catch {
      // dropped (or aborted by stop()): the caller decides whether to resume
    } finally {
      parser.end();
      reader.cancel().catch(() => {});
    }
  }

  _event(ev, st, on) {
    const n = eventNumber(ev.id);
    if (n >= 0 && n <= st.lastN) return; // seen before the reconnect
    if (n >= 0) { st.lastN = n; st.last = ev.id; }
    if (ev.data === DONE) { st.done = true; return; }
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    if (ev.event === "start") {
      this.sid = data.stream_id;
      on.start?.(data);
      if (this.stopped) this._stopNow(); // Stop was pressed while the server checked the request
    } else if (ev.event === "usage") {
      st.usage = data;
      on.usage?.(data);
    } else if (ev.event === "error") {
      st.error = data;
      on.error?.(data);
    } else if (typeof data.content === "string") {
      st.text += data.content;
      on.content?.(data.content, st.text);
    } else if (data.tool_call) {
      st.toolCalls.push(data.tool_call);
      on.tool_call?.(data.tool_call);
    }
    if (!this.sid && ev.id.includes(":")) this.sid = ev.id.slice(0, ev.id.lastIndexOf(":"));
  }

  // Stop the answer: abort the read and ask the server to stop the call (recorded as
  // interrupted). Before the server has named the stream (it checks the request first), the
  // read goes on until it does, so that the call can be stopped rather than left running.
  stop() {
    this.stopped = true;
    if (this.sid) this._stopNow();
  }

  _stopNow() {
    this.controller?.abort();
    this.fetch(`${this.base}/api/chat/${encodeURIComponent(this.sid)}`, {
      method: "DELETE", credentials: "same-origin", headers: this._headers(), keepalive: true,
    }).catch(() => {});
  }
}
