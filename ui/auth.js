// auth.js: bearer tokens for a guarded aqueduct. Every request of the page goes through
// apiFetch(): it sends the token kept in sessionStorage as `Authorization: Bearer`, and when
// the API answers 401 it shows a small form asking for the token once (never prompt(), never
// the URL, no cookie), then retries. An open aqueduct never shows the form.

const KEY = 'thalassa.token';
let pending = null; // the promise of the token form while it is shown

export function token() {
  try { return sessionStorage.getItem(KEY) || ''; } catch (_) { return ''; }
}

function remember(value) {
  try { sessionStorage.setItem(KEY, value); } catch (_) { /* private mode: this page only */ }
  memoryToken = value;
}
let memoryToken = '';

function currentToken() { return token() || memoryToken; }

/** fetch() with the token; on 401 asks for a (new) token and tries again. */
export async function apiFetch(url, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const bearer = currentToken();
    if (bearer) headers.set('authorization', `Bearer ${bearer}`);
    const response = await fetch(url, { ...options, headers });
    if (response.status !== 401) return response;
    await askForToken(bearer ? 'That token was not accepted.' : 'This aqueduct needs a token.');
  }
}

/** Shows the token form (once, whoever asks) and resolves when a token is entered. */
export function askForToken(reason) {
  if (pending) return pending;
  pending = new Promise((resolve) => {
    const form = document.createElement('form');
    form.id = 'token-form';
    form.className = 'token-form';
    form.setAttribute('aria-label', 'access token');
    const text = document.createElement('p');
    text.textContent = `${reason} Enter the admin token (or the read token to only watch).`;
    const input = document.createElement('input');
    input.type = 'password';
    input.name = 'token';
    input.id = 'token-input';
    input.autocomplete = 'off';
    input.required = true;
    input.setAttribute('aria-label', 'token');
    const button = document.createElement('button');
    button.type = 'submit';
    button.textContent = 'Use token';
    form.append(text, input, button);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      remember(value);
      form.remove();
      pending = null;
      resolve(value);
    });
    document.body.prepend(form);
    input.focus();
  });
  return pending;
}

/**
 * Reads a server-sent-events stream with fetch (EventSource cannot send headers). Calls
 * onEvent(type, data) per message; resolves when the stream ends, rejects on an error status.
 */
export async function readEventStream(url, onEvent, signal) {
  const response = await apiFetch(url, { headers: { accept: 'text/event-stream' }, cache: 'no-store', signal });
  if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      let line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent(type, data.join('\n'));
        type = 'message';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // a keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let fieldValue = colon < 0 ? '' : line.slice(colon + 1);
      if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
      if (field === 'event') type = fieldValue;
      else if (field === 'data') data.push(fieldValue);
    }
  }
}
