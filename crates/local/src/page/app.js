// Countersign's Slack simulator page. Plain JS, no build step, served from the binary.
//
// It polls /slack/sim/state, renders channels and Block Kit (header, section with fields, context, divider,
// actions with buttons and confirm dialogs, the deny modal), and sends clicks and modal submissions to the
// server (/slack/sim/click, /slack/sim/submit), which signs them with the signing secret and posts them to
// /slack/interactions like Slack would. The secret never reaches this page.
//
// Everything is built with DOM nodes and textContent: message text is requester-controlled and must never be
// parsed as HTML.
'use strict';

(() => {
  const POLL_MS = 700;
  const S = {
    data: null,
    user: null,
    channel: null,
    renderedKey: '',
    modalKey: '',
    lastCount: {},
  };

  const $ = (id) => document.getElementById(id);

  /** el('div', {class: 'x', text: 'y', data: {ts: '1'}}, child, …) */
  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k === 'text') n.textContent = v;
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) n.dataset[dk] = dv;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) n.addEventListener(ev, fn);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) n.append(c);
    return n;
  }

  // ---- mrkdwn -------------------------------------------------------------------------------------------

  const EMOJI = {
    white_check_mark: '✅', no_entry: '⛔', hourglass_flowing_sand: '⏳', hourglass: '⌛', warning: '⚠️',
    lock: '🔒', speech_balloon: '💬', robot_face: '🤖', heavy_multiplication_x: '✖️', x: '❌',
    rotating_light: '🚨', eyes: '👀', tada: '🎉', bell: '🔔',
  };

  function userName(id) {
    const u = (S.data && S.data.users || []).find((x) => x.id === id);
    return u ? u.name : id;
  }

  function groupHandle(id) {
    const g = (S.data && S.data.groups || []).find((x) => x.id === id);
    return g ? g.handle : id;
  }

  function channelName(id) {
    const c = (S.data && S.data.channels || []).find((x) => x.id === id);
    return c ? c.name : id;
  }

  function ordinal(n) {
    const s = ['th', 'st', 'nd', 'rd'];
    const v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  function dayDiff(d) {
    const a = new Date(d.getFullYear(), d.getMonth(), d.getDate());
    const now = new Date();
    const b = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    return Math.round((a - b) / 86400000);
  }

  /** Slack's <!date^SECONDS^FORMAT|fallback> tokens, in the reader's time zone. */
  function formatDate(seconds, format) {
    const d = new Date(seconds * 1000);
    if (isNaN(d)) return null;
    const month = d.toLocaleString('en-US', { month: 'long' });
    const mon = d.toLocaleString('en-US', { month: 'short' });
    const weekday = d.toLocaleString('en-US', { weekday: 'long' });
    const pretty = (fallback) => {
      const diff = dayDiff(d);
      if (diff === 0) return 'today';
      if (diff === -1) return 'yesterday';
      if (diff === 1) return 'tomorrow';
      return fallback;
    };
    const dateShort = `${mon} ${d.getDate()}, ${d.getFullYear()}`;
    const date = `${month} ${ordinal(d.getDate())}, ${d.getFullYear()}`;
    const p2 = (n) => String(n).padStart(2, '0');
    const values = {
      date_num: `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}`,
      date,
      date_short: dateShort,
      date_long: `${weekday}, ${date}`,
      date_pretty: pretty(date),
      date_short_pretty: pretty(`${mon} ${d.getDate()}`),
      date_long_pretty: pretty(`${weekday}, ${date}`),
      time: d.toLocaleTimeString('en-US', { hour: 'numeric', minute: '2-digit' }),
      time_secs: d.toLocaleTimeString('en-US', { hour: 'numeric', minute: '2-digit', second: '2-digit' }),
    };
    return format.replace(/\{(\w+)\}/g, (m, k) => (k in values ? values[k] : m));
  }

  function decodeEntities(s) {
    return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  }

  /** A <…> token: mentions, user groups, dates, channels, links. */
  function renderToken(body) {
    const [main, label] = splitOnce(body, '|');
    if (main.startsWith('@')) {
      const id = main.slice(1);
      return el('span', { class: 'mention' + (id === S.user ? ' me' : ''), text: '@' + (label || userName(id)) });
    }
    if (main.startsWith('#')) return el('span', { class: 'mention', text: '#' + (label || channelName(main.slice(1))) });
    if (main.startsWith('!subteam^')) {
      return el('span', { class: 'mention', text: '@' + (label || groupHandle(main.slice(9))) });
    }
    if (main.startsWith('!date^')) {
      const parts = main.split('^');
      const shown = formatDate(Number(parts[1]), parts[2] || '{date_num} {time}');
      return el('span', { class: 'date', title: label ? decodeEntities(label) : '', text: shown || decodeEntities(label || '') });
    }
    if (main === '!here' || main === '!channel' || main === '!everyone') {
      return el('span', { class: 'mention', text: '@' + main.slice(1) });
    }
    const url = decodeEntities(main);
    const text = decodeEntities(label || main);
    if (/^(https?:|mailto:)/i.test(url)) {
      return el('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text });
    }
    return document.createTextNode(text);
  }

  function splitOnce(s, sep) {
    const i = s.indexOf(sep);
    return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + 1)];
  }

  /** Text with line breaks and :emoji:. */
  function leaf(s) {
    const out = [];
    s.split('\n').forEach((line, i) => {
      if (i > 0) out.push(el('br'));
      const withEmoji = line.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
      if (withEmoji) out.push(document.createTextNode(withEmoji));
    });
    return out;
  }

  const INLINE = [
    { re: /`([^`\n]+)`/, tag: 'code', nest: false },
    { re: /(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])/, tag: 'b', nest: true },
    { re: /(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])/, tag: 'i', nest: true },
    { re: /(?<![\w~])~(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])/, tag: 's', nest: true },
  ];

  /** *bold*, _italic_, ~strike~, `code` in already-decoded text. */
  function inline(s) {
    let best = null;
    for (const p of INLINE) {
      const m = p.re.exec(s);
      if (m && (!best || m.index < best.m.index)) best = { m, p };
    }
    if (!best) return leaf(s);
    const { m, p } = best;
    const inner = p.nest ? inline(m[1]) : [document.createTextNode(m[1])];
    return [...leaf(s.slice(0, m.index)), el(p.tag, {}, inner), ...inline(s.slice(m.index + m[0].length))];
  }

  /** Renders Slack mrkdwn into DOM nodes. Raw `<` only ever starts a token: text `<` arrives as `&lt;`. */
  function mrkdwn(text) {
    const out = [];
    const blocks = String(text).split('```');
    blocks.forEach((chunk, bi) => {
      if (bi % 2 === 1) {
        out.push(el('pre', {}, el('code', { text: decodeEntities(chunk) })));
        return;
      }
      let rest = chunk;
      const re = /<([^<>]*)>/;
      while (rest.length) {
        const m = re.exec(rest);
        if (!m) {
          out.push(...inline(decodeEntities(rest)));
          break;
        }
        out.push(...inline(decodeEntities(rest.slice(0, m.index))));
        out.push(renderToken(m[1]));
        rest = rest.slice(m.index + m[0].length);
      }
    });
    return out;
  }

  /**
   * A text object as Slack shows it. plain_text: no formatting at all; the three entities decoded;
   * `:shortcodes:` become emoji only unless `"emoji": false` (Slack's default is true).
   */
  function textObject(t) {
    if (!t) return [];
    if (t.type === 'mrkdwn') return mrkdwn(t.text || '');
    const text = decodeEntities(String(t.text || ''));
    const shown = t.emoji === false ? text : text.replace(/:([a-z0-9_+-]+):/g, (m, n) => EMOJI[n] || m);
    const out = [];
    shown.split('\n').forEach((line, i) => {
      if (i > 0) out.push(el('br'));
      if (line) out.push(document.createTextNode(line));
    });
    return out;
  }

  // ---- Block Kit ----------------------------------------------------------------------------------------

  function renderBlocks(blocks, ctx) {
    return (blocks || []).map((b) => renderBlock(b, ctx));
  }

  function renderBlock(b, ctx) {
    switch (b.type) {
      case 'header':
        return el('div', { class: 'b-header' }, textObject(b.text));
      case 'section': {
        const n = el('div', { class: 'b-section' });
        if (b.text) n.append(el('div', { class: 'b-text mk' }, textObject(b.text)));
        if (b.fields) n.append(el('div', { class: 'b-fields' }, b.fields.map((f) => el('div', { class: 'b-field mk' }, textObject(f)))));
        return n;
      }
      case 'context':
        return el('div', { class: 'b-context mk' }, (b.elements || []).map((e) =>
          e.type === 'image' ? el('img', { src: e.image_url, alt: e.alt_text || '' }) : el('span', {}, textObject(e))));
      case 'divider':
        return el('hr', { class: 'b-divider' });
      case 'actions':
        return el('div', { class: 'b-actions', data: { blockId: b.block_id || '' } },
          (b.elements || []).map((e) => renderElement(e, b, ctx)));
      case 'input':
        return renderInput(b, ctx);
      default:
        return el('div', { class: 'b-unknown', text: `[${b.type} block]` });
    }
  }

  function renderElement(e, block, ctx) {
    if (e.type !== 'button') return el('span', { class: 'b-unknown', text: `[${e.type}]` });
    const style = e.style === 'primary' ? ' primary' : e.style === 'danger' ? ' danger' : '';
    const btn = el('button', {
      class: 'btn' + style,
      type: 'button',
      data: { actionId: e.action_id || '', blockId: block.block_id || '' },
    }, textObject(e.text));
    btn.addEventListener('click', async () => {
      if (!ctx || !ctx.message) return;
      if (e.confirm && !(await confirmDialog(e.confirm))) return;
      await click(ctx, block, e, btn);
    });
    return btn;
  }

  function renderInput(b, ctx) {
    const e = b.element || {};
    const id = `input-${b.block_id}`;
    const field = e.multiline
      ? el('textarea', { id, maxlength: e.max_length, minlength: e.min_length, data: { blockId: b.block_id, actionId: e.action_id } })
      : el('input', { id, maxlength: e.max_length, minlength: e.min_length, data: { blockId: b.block_id, actionId: e.action_id } });
    const errors = (ctx && ctx.errors) || {};
    const wrap = el('div', { class: 'input-block' + (errors[b.block_id] ? ' has-error' : ''), data: { blockId: b.block_id } },
      el('label', { for: id }, textObject(b.label)), field);
    if (errors[b.block_id]) wrap.append(el('div', { class: 'input-error', text: errors[b.block_id] }));
    if (e.max_length) wrap.append(el('div', { class: 'input-hint', text: `Up to ${e.max_length} characters.` }));
    return wrap;
  }

  // ---- dialogs ------------------------------------------------------------------------------------------

  function closeOverlay() {
    const o = $('overlay');
    o.replaceChildren();
    o.hidden = true;
    S.modalKey = '';
  }

  /** A button's confirm object → Promise<boolean>. */
  function confirmDialog(c) {
    return new Promise((resolve) => {
      const done = (v) => { closeOverlay(); resolve(v); };
      const okStyle = c.style === 'danger' ? 'btn danger solid' : 'btn primary';
      const dlg = el('div', { class: 'dialog confirm-dialog', id: 'confirm-dialog', role: 'dialog', 'aria-modal': 'true' },
        el('div', { class: 'dialog-head' }, el('span', {}, textObject(c.title))),
        el('div', { class: 'dialog-body mk' }, textObject(c.text)),
        el('div', { class: 'dialog-foot' },
          el('button', { class: 'btn cancel', type: 'button', on: { click: () => done(false) } }, textObject(c.deny)),
          el('button', { class: okStyle + ' confirm', type: 'button', on: { click: () => done(true) } }, textObject(c.confirm))));
      const o = $('overlay');
      o.replaceChildren(dlg);
      o.hidden = false;
      S.modalKey = 'confirm';
    });
  }

  /** The view the app opened for the person we act as (views.open). */
  function renderModal(modal) {
    const key = modal ? `${modal.view_id}|${JSON.stringify(modal.errors || {})}` : '';
    if (S.modalKey === 'confirm' || key === S.modalKey) return;
    if (!modal) { closeOverlay(); return; }
    const kept = {};
    document.querySelectorAll('#overlay [data-block-id][data-action-id]').forEach((f) => { kept[f.dataset.blockId] = f.value; });
    const v = modal.view;
    const body = el('div', { class: 'dialog-body' }, renderBlocks(v.blocks, { errors: modal.errors || {} }));
    const errLine = el('div', { class: 'dialog-error', hidden: true });
    body.append(errLine);
    const submit = el('button', { class: 'btn primary submit', type: 'button' }, textObject(v.submit || { type: 'plain_text', text: 'Submit' }));
    const cancel = () => post('/slack/sim/close', { user: S.user, view_id: modal.view_id }).finally(() => { closeOverlay(); refresh(); });
    const dlg = el('div', { class: 'dialog', id: 'modal', role: 'dialog', 'aria-modal': 'true', data: { viewId: modal.view_id } },
      el('div', { class: 'dialog-head' }, el('span', {}, textObject(v.title)),
        el('button', { class: 'x', type: 'button', 'aria-label': 'Close', text: '×', on: { click: cancel } })),
      body,
      el('div', { class: 'dialog-foot' },
        el('button', { class: 'btn cancel', type: 'button', on: { click: cancel } }, textObject(v.close || { type: 'plain_text', text: 'Cancel' })),
        submit));
    submit.addEventListener('click', async () => {
      const values = {};
      let missing = false;
      body.querySelectorAll('[data-block-id][data-action-id]').forEach((f) => {
        const min = Number(f.getAttribute('minlength') || 0);
        if (f.value.length < min) { missing = true; f.closest('.input-block').classList.add('has-error'); }
        values[f.dataset.blockId] = { [f.dataset.actionId]: f.value };
      });
      if (missing) { errLine.textContent = 'Please fill out the required field.'; errLine.hidden = false; return; }
      submit.disabled = true;
      const r = await post('/slack/sim/submit', { user: S.user, view_id: modal.view_id, values });
      submit.disabled = false;
      report('view_submission', r);
      if (r.closed) { closeOverlay(); refresh(); return; }
      if (r.status !== 200) {
        errLine.textContent = `We had some trouble connecting (the app answered ${describe(r)}). Try again?`;
        errLine.hidden = false;
      }
      refresh();
    });
    const o = $('overlay');
    o.replaceChildren(dlg);
    o.hidden = false;
    S.modalKey = key;
    for (const [blockId, value] of Object.entries(kept)) {
      const f = o.querySelector(`[data-block-id="${CSS.escape(blockId)}"][data-action-id]`);
      if (f) f.value = value;
    }
    const first = o.querySelector('textarea, input');
    if (first) first.focus();
  }

  // ---- server calls -------------------------------------------------------------------------------------

  async function post(path, body) {
    try {
      const r = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) return { status: 0, error: j.error || `HTTP ${r.status}` };
      return j;
    } catch (e) {
      return { status: 0, error: 'cannot reach countersign dev: is it still running?' };
    }
  }

  function describe(r) {
    if (r.error) return r.error;
    const msg = r.body && r.body.error && r.body.error.message;
    return `HTTP ${r.status}${msg ? `: ${msg}` : ''}`;
  }

  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  function report(kind, r) {
    const s = $('status');
    s.replaceChildren();
    const ok = r.status === 200;
    s.append(`Last callback: ${kind} as ${userName(S.user)} → /slack/interactions `,
      el('span', { class: ok ? 'good' : 'bad', text: describe(r) }));
    if (!ok) toast(`The app did not accept the ${kind} (${describe(r)}).`);
  }

  async function click(ctx, block, e, btn) {
    btn.disabled = true;
    const r = await post('/slack/sim/click', {
      user: S.user, channel: ctx.channel, ts: ctx.message.ts, action_id: e.action_id, block_id: block.block_id,
    });
    btn.disabled = false;
    report('block_actions', r);
    refresh();
  }

  // ---- rendering ----------------------------------------------------------------------------------------

  function timeOf(ts) {
    const d = new Date(Number(String(ts).split('.')[0]) * 1000);
    return d.toLocaleTimeString('en-US', { hour: 'numeric', minute: '2-digit' });
  }

  function messageContent(m, ctx) {
    if (Array.isArray(m.blocks) && m.blocks.length) return renderBlocks(m.blocks, ctx);
    return [el('div', { class: 'b-text mk' }, mrkdwn(m.text || ''))];
  }

  function renderMessage(channel, m) {
    const ctx = { channel: channel.id, message: m };
    const body = el('div', { class: 'msg-body' },
      el('div', { class: 'meta' },
        el('span', { class: 'sender', text: 'Countersign' }), el('span', { class: 'app-badge', text: 'APP' }),
        el('span', { class: 'time', text: timeOf(m.ts) }), m.edited ? el('span', { class: 'edited', text: '(edited)' }) : null),
      messageContent(m, ctx));
    if (m.replies && m.replies.length) {
      const n = m.replies.length;
      body.append(el('div', { class: 'thread' },
        el('div', { class: 'thread-count', text: `${n} ${n === 1 ? 'reply' : 'replies'}` }),
        m.replies.map((r) => el('div', { class: 'reply', data: { ts: r.ts } },
          el('div', { class: 'reply-meta', text: `Countersign · ${timeOf(r.ts)}` }),
          messageContent(r, { channel: channel.id, message: r })))));
    }
    return el('div', { class: 'message', data: { ts: m.ts, channel: channel.id } }, el('div', { class: 'avatar', text: 'CS' }), body);
  }

  function renderEphemeral(e) {
    const dismiss = el('button', { class: 'dismiss', type: 'button', text: 'Dismiss' });
    dismiss.addEventListener('click', () => post('/slack/sim/dismiss', { user: S.user, id: e.id }).then(refresh));
    return el('div', { class: 'message ephemeral', data: { ts: e.ts, ephemeral: String(e.id) } },
      el('div', { class: 'avatar', text: 'CS' }),
      el('div', { class: 'msg-body' },
        el('div', { class: 'meta' }, el('span', { class: 'sender', text: 'Countersign' }),
          el('span', { class: 'app-badge', text: 'APP' }), el('span', { class: 'time', text: timeOf(e.ts) }),
          el('span', { class: 'only-you', text: 'Only visible to you' }), dismiss),
        messageContent(e, null)));
  }

  function renderUsers() {
    const sel = $('acting-as');
    const users = S.data.users || [];
    if (!S.user || !users.some((u) => u.id === S.user)) S.user = users.length ? users[0].id : null;
    const wanted = users.map((u) => u.id).join(',');
    if (sel.dataset.users !== wanted) {
      sel.replaceChildren(...users.map((u) => el('option', { value: u.id, text: `${u.name} (${u.id})` })));
      sel.dataset.users = wanted;
    }
    sel.value = S.user || '';
    const me = users.find((u) => u.id === S.user);
    $('acting-title').textContent = me && me.title ? me.title : '';
    const roles = me && me.roles.length ? me.roles.map((r) => el('li', { text: r })) : [el('li', { class: 'none', text: 'not named by any policy' })];
    $('acting-roles').replaceChildren(...roles);
  }

  function renderChannels() {
    const chans = S.data.channels || [];
    if (!S.channel || !chans.some((c) => c.id === S.channel)) {
      const withMessages = chans.find((c) => c.messages.length);
      S.channel = (withMessages || chans[0] || {}).id || null;
    }
    $('channels').replaceChildren(...chans.map((c) => {
      const li = el('li', { class: c.id === S.channel ? 'active' : '', data: { channel: c.id } },
        el('span', { text: `# ${c.name}` }), c.messages.length ? el('span', { class: 'count', text: String(c.messages.length) }) : null);
      li.addEventListener('click', () => { S.channel = c.id; save(); render(true); });
      return li;
    }));
  }

  function render(force) {
    const d = S.data;
    if (!d) return;
    const key = `${d.version}|${S.user}|${S.channel}`;
    if (!force && key === S.renderedKey) { renderModal(d.modal); return; }
    S.renderedKey = key;
    $('ws-name').textContent = d.workspace.domain;
    renderUsers();
    renderChannels();
    const channel = (d.channels || []).find((c) => c.id === S.channel);
    $('channel-name').textContent = channel ? channel.name : '';
    $('channel-id').textContent = channel ? channel.id : '';
    const box = $('messages');
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const items = [];
    if (channel) {
      for (const m of channel.messages) items.push({ ts: m.ts, node: renderMessage(channel, m) });
      for (const e of d.ephemerals || []) if (e.channel === channel.id) items.push({ ts: e.ts, node: renderEphemeral(e) });
    }
    items.sort((a, b) => Number(a.ts) - Number(b.ts));
    box.replaceChildren(...(items.length ? items.map((i) => i.node)
      : [el('div', { class: 'empty', text: 'No messages yet. Make a request (see the terminal running countersign dev).' })]));
    const count = items.length;
    if (nearBottom || S.lastCount[S.channel] !== count) box.scrollTop = box.scrollHeight;
    S.lastCount[S.channel] = count;
    renderModal(d.modal);
  }

  function save() {
    try {
      localStorage.setItem('cs-sim-user', S.user || '');
      localStorage.setItem('cs-sim-channel', S.channel || '');
    } catch (e) { /* private mode */ }
    const u = new URL(location.href);
    if (S.user) u.searchParams.set('as', S.user);
    if (S.channel) u.searchParams.set('channel', S.channel);
    history.replaceState(null, '', u);
  }

  let polling = null;
  async function refresh() {
    const user = S.user;
    try {
      const r = await fetch(`/slack/sim/state?user=${encodeURIComponent(user || '')}`, { cache: 'no-store' });
      const data = await r.json();
      // A poll that left before "Acting as" changed answers for the previous user (their ephemeral replies):
      // rendered under the new user's key, it would stay on screen until the next change.
      if (user !== S.user) return;
      S.data = data;
      render(false);
    } catch (e) {
      $('status').textContent = 'Cannot reach countersign dev: is it still running?';
    }
  }

  function loop() {
    clearTimeout(polling);
    refresh().finally(() => { polling = setTimeout(loop, POLL_MS); });
  }

  function init() {
    const q = new URLSearchParams(location.search);
    let stored = {};
    try { stored = { user: localStorage.getItem('cs-sim-user'), channel: localStorage.getItem('cs-sim-channel') }; } catch (e) { /* ignore */ }
    S.user = q.get('as') || stored.user || null;
    S.channel = q.get('channel') || stored.channel || null;
    $('acting-as').addEventListener('change', (ev) => {
      S.user = ev.target.value;
      save();
      if (S.modalKey !== 'confirm') closeOverlay();
      refresh();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && S.modalKey === 'confirm') {
        const b = document.querySelector('#confirm-dialog .cancel');
        if (b) b.click();
      }
    });
    loop();
  }

  // For people poking at it from the console, and for the browser test.
  window.countersignSim = { state: () => S, refresh, mrkdwn };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
