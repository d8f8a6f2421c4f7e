// The clinic dashboard: four socket.io namespaces multiplexed over one connection,
// authenticated by the HttpOnly session cookie the login page set (same origin, so
// the browser sends it). Before the session's token expires, the page fetches a
// fresh one for the same session and hands it to the gateway (auth:refresh); it
// reports the person's input (session:activity) so that only an unattended page is
// signed out. Text from the server or other users is only ever put in the page with
// textContent.
(function () {
  'use strict';

  const config = JSON.parse(document.getElementById('clinic-config').textContent);
  const me = config.user;
  const TYPING_PAUSE_MS = 1500;
  const FEED_LIMIT = 50;
  // How long the expiry warning stays up before the page renews the session, at most
  // (and at most half the time left): long enough to be seen. Nothing else waits.
  const RENEW_AFTER_MS = 5000;
  const REFRESH_TIMEOUT_MS = 10000;
  // Input is reported at most this often: a few times per idle timeout, at most
  // every 30 s.
  const ACTIVITY_EVERY_MS = config.idleTimeout
    ? Math.min(30000, (config.idleTimeout * 1000) / 4) : null;
  const ENDINGS = {
    expired: 'Your session expired.',
    revoked: 'You were signed out.',
    idle: 'Signed out after inactivity.',
  };

  // userId -> display name: the demo directory, then whatever the server tells us.
  const names = new Map(Object.entries(config.directory));

  const byId = (id) => document.getElementById(id);

  function nameOf(userId) {
    return names.get(userId) || userId;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // The gateway stamps events with epoch milliseconds; an ISO string works too.
  function millis(timestamp) {
    return typeof timestamp === 'number' ? timestamp : Date.parse(timestamp);
  }

  // A <time> element showing the local time of a timestamp.
  function clock(timestamp) {
    const moment = new Date(millis(timestamp));
    const node = element('time', moment.toLocaleTimeString());
    node.dateTime = moment.toISOString();
    return node;
  }

  function prependCapped(list, item) {
    list.prepend(item);
    while (list.children.length > FEED_LIMIT) list.lastElementChild.remove();
  }

  // -- connections ------------------------------------------------------------------

  const sockets = [];
  // For tests and curious developers, in the browser's console: the page's sockets.
  window.clinic = {sockets};
  // A closed page leaves at once: to the server a transport that just closes is a
  // dropped connection, kept for recovery (and the user shown present) for two minutes.
  window.addEventListener('pagehide', () => sockets.forEach((socket) => socket.disconnect()));

  function setState(key, text, className) {
    const node = byId('state-' + key);
    node.textContent = text;
    node.className = className || '';
  }

  // One socket per namespace; io() reuses one Manager (one transport) for all.
  function connect(namespace, key) {
    const socket = io(namespace);
    sockets.push(socket);
    socket.on('connect', () => setState(key, 'connected', 'ok'));
    socket.on('disconnect', (reason) => {
      // Once the session has ended, nothing may reconnect with its cookie (the server
      // disconnects every socket itself, after which socket.io does not retry; a
      // transport that drops first would).
      if (session.ended && socket.active) socket.disconnect();
      const retrying = socket.active ? ', reconnecting…' : '';
      setState(key, 'disconnected (' + reason + ')' + retrying, 'bad');
    });
    socket.on('connect_error', (error) => {
      const data = error.data || {};
      if (data.code === 'unauthenticated') {
        setState(key, 'refused (' + (data.reason || 'unauthenticated') + ')', 'bad');
        endSession(ENDINGS[data.reason] || 'Your session is not valid any more.');
      } else {
        setState(key, 'connection failed (' + error.message + '), retrying…', 'bad');
      }
    });
    socket.on('server:shutdown', (notice) => {
      showBanner((notice && notice.message) || 'The server is shutting down', 'reload');
      // Leave promptly so the server can stop; a reload reconnects once it is back.
      sockets.forEach((each) => each.disconnect());
    });
    socket.on('auth:expiring', warnExpiring);
    Object.keys(ENDINGS).forEach((reason) => {
      socket.on('auth:' + reason, () => endSession(ENDINGS[reason]));
    });
    return socket;
  }

  // A banner over the page: text, then a link to sign in again ('login'), advice
  // to reload ('reload') or nothing; 'warning' is styled as a warning, not an error.
  function showBanner(text, action, kind) {
    const banner = byId('banner');
    banner.replaceChildren(element('span', text + ' '));
    if (action === 'login') {
      const link = element('a', 'Sign in again');
      link.href = '/';
      link.dataset.testid = 'sign-in-again';
      banner.append(link);
    } else if (action === 'reload') {
      banner.append(element('span', 'Reload the page once it is back.'));
    }
    banner.className = 'banner' + (kind ? ' ' + kind : '');
    banner.hidden = false;
  }

  function hideBanner() {
    byId('banner').hidden = true;
  }

  // -- the session: expiry warning, renewal, activity, its end -----------------------

  const session = {
    ended: false,
    expiresAt: 0, // ms: the expiry the connection has now, once a renewal said
    warnedFor: 0, // ms: the expiry being warned about (and renewed), 0 for none
    countdown: null,
    note: '',
    lastActivity: 0,
  };
  // Other tabs of this browser share the session (one cookie): input in any of them
  // keeps all of them signed in.
  const tabs = 'BroadcastChannel' in window ? new BroadcastChannel('clinic-activity') : null;

  // Each socket.io Manager is one client connection (engine.io), whichever namespaces
  // it carries: a refresh or an activity report on one of its sockets covers them all.
  function connectionSockets() {
    const managers = new Set(sockets.map((socket) => socket.io));
    return [...managers]
      .map((manager) => sockets.find((socket) => socket.io === manager && socket.connected))
      .filter(Boolean);
  }

  function stopCountdown() {
    clearInterval(session.countdown);
    session.countdown = null;
  }

  // "Your session expires in N s", counting down to a local deadline (the server
  // says how many seconds are left, so the two clocks need not agree).
  function startCountdown(secondsLeft, note) {
    stopCountdown();
    const deadline = Date.now() + secondsLeft * 1000;
    const render = () => {
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      showBanner('Your session expires in ' + left + ' s. ' + session.note, null, 'warning');
    };
    session.note = note;
    render();
    session.countdown = setInterval(render, 1000);
  }

  function warnExpiring(warning) {
    if (session.ended || !warning) return;
    const expiresAt = warning.expiresAt;
    // Every namespace socket is warned: one warning per expiry is handled, and one
    // about an expiry a renewal has already replaced is old news.
    if (expiresAt === session.warnedFor || expiresAt < session.expiresAt) return;
    session.warnedFor = expiresAt;
    byId('banner').dataset.expiresAt = String(expiresAt);
    startCountdown(warning.secondsLeft, 'Renewing it…');
    const wait = Math.min(RENEW_AFTER_MS, (warning.secondsLeft * 1000) / 2);
    setTimeout(() => renew(expiresAt), wait);
  }

  async function freshToken() {
    // Same origin: the session cookie authenticates the call, and the answer renews
    // the cookie too.
    const response = await fetch(config.refreshUrl, {
      method: 'POST',
      headers: {'Accept': 'application/json'},
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || 'HTTP ' + response.status);
    return answer.token;
  }

  // A fresh token for the same session, sent once per client connection. This is
  // not the person's activity and is not reported as such.
  async function renew(expiresAt) {
    if (session.ended || session.warnedFor !== expiresAt) return;
    let acks;
    try {
      const token = await freshToken();
      acks = await Promise.all(connectionSockets().map((socket) => socket
        .timeout(REFRESH_TIMEOUT_MS)
        .emitWithAck('auth:refresh', {token})
        .catch((error) => ({success: false, error: error.message}))));
    } catch (error) {
      acks = [{success: false, error: error.message}];
    }
    if (session.ended || session.warnedFor !== expiresAt) return;
    const failed = acks.find((ack) => !ack.success);
    if (failed || acks.length === 0) {
      session.note = 'It could not be renewed (' +
        ((failed && (failed.error || failed.reason)) || 'not connected') + ').';
      return; // the countdown goes on; auth:expired ends the session
    }
    session.expiresAt = Math.max(...acks.map((ack) => ack.expiresAt || 0));
    session.warnedFor = 0;
    stopCountdown();
    hideBanner();
    byId('session-status').textContent = session.expiresAt
      ? 'Session renewed at ' + new Date().toLocaleTimeString() + ', valid until ' +
        new Date(session.expiresAt).toLocaleTimeString() + '.'
      : 'Session renewed.';
  }

  // The person is here: tell the gateway (throttled), and the other tabs.
  function reportActivity(fromHere) {
    if (session.ended || !ACTIVITY_EVERY_MS) return;
    const now = Date.now();
    if (now - session.lastActivity < ACTIVITY_EVERY_MS) return;
    session.lastActivity = now;
    connectionSockets().forEach((socket) => socket.emit('session:activity'));
    if (fromHere && tabs) tabs.postMessage('activity');
  }

  function endSession(text) {
    if (session.ended) return;
    session.ended = true;
    session.warnedFor = 0;
    stopCountdown();
    if (tabs) tabs.close();
    byId('session-status').textContent = '';
    showBanner(text, 'login');
  }

  for (const type of ['keydown', 'pointerdown']) {
    document.addEventListener(type, () => reportActivity(true), {capture: true, passive: true});
  }
  if (tabs) tabs.addEventListener('message', () => reportActivity(false));

  // -- / -------------------------------------------------------------------------------

  function setUpMain() {
    const main = connect('/', 'main');
    main.on('connected', (welcome) => {
      byId('welcome').textContent =
        'Welcome ' + nameOf(welcome.userId) + ': socket ' + welcome.socketId +
        ', server time ' + new Date(welcome.serverTime).toLocaleTimeString() + '.';
    });
  }

  // -- /notifications ---------------------------------------------------------------

  function setUpNotifications() {
    const notifications = connect('/notifications', 'notifications');
    const list = byId('notifications');
    notifications.on('connect', () => {
      // The channels are the reference rules' own: the answer shows what this role gets.
      notifications.emit('subscribe', ['system', 'clinical', 'billing', 'admin'], (ack) => {
        byId('channels').textContent = ack.success
          ? 'Channels: subscribed ' + (ack.subscribedChannels.join(', ') || 'none') +
            '; denied ' + (ack.deniedChannels.join(', ') || 'none') + '.'
          : 'Channels: ' + ack.error;
      });
    });
    notifications.on('notification', (note) => {
      const item = element('li', undefined, 'note-' + note.type);
      item.dataset.testid = 'notification';
      item.append(
        clock(note.timestamp),
        element('strong', note.title),
        element('span', note.message),
      );
      prependCapped(list, item);
    });
  }

  // -- /chat ---------------------------------------------------------------------------

  function setUpChat() {
    const chat = connect('/chat', 'chat');
    const members = new Set();
    const typing = new Map(); // userId -> name of those typing now
    let conversationId = config.conversationId;
    let joined = false;
    let typingSent = false;
    let typingTimer = null;

    // Every conversation of the app is offered; the server decides who may join.
    const picker = byId('conversation-pick');
    picker.replaceChildren(...config.conversations.map((id) => {
      const option = element('option', id);
      option.value = id;
      return option;
    }));
    picker.value = conversationId;
    byId('conversation-id').textContent = conversationId;

    // Events of a conversation this page has just left may still be on their way.
    const current = (event) => event.conversationId === conversationId;

    function renderPresence() {
      const list = byId('presence');
      const sorted = [...members].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
      list.replaceChildren(...sorted.map((userId) => {
        const item = element('li', nameOf(userId) + (userId === me.id ? ' (you)' : ''));
        item.dataset.userId = userId;
        item.dataset.testid = 'member';
        return item;
      }));
    }

    function renderTyping() {
      const who = [...typing.values()];
      byId('typing').textContent = who.length === 0 ? ''
        : who.join(', ') + (who.length === 1 ? ' is typing…' : ' are typing…');
    }

    function stopTyping() {
      clearTimeout(typingTimer);
      typingTimer = null;
      if (typingSent) {
        typingSent = false;
        chat.emit('typing:stop', conversationId);
      }
    }

    function join() {
      const wanted = conversationId;
      chat.emit('join:conversation', wanted, (ack) => {
        if (wanted !== conversationId) {
          // The user picked another conversation meanwhile.
          if (ack.success) chat.emit('leave:conversation', wanted);
          return;
        }
        joined = ack.success;
        byId('chat').hidden = !joined;
        const note = byId('chat-unavailable');
        note.hidden = joined;
        if (!joined) {
          note.textContent = 'Chat "' + conversationId + '" is not available to you (' +
            ack.code + ': ' + ack.error + ').';
          return;
        }
        members.clear();
        ack.members.forEach((userId) => members.add(userId));
        renderPresence();
      });
    }

    // Rooms live on the server's side of a connection: join again after a reconnect.
    chat.on('connect', join);

    picker.addEventListener('change', () => {
      if (picker.value === conversationId) return;
      stopTyping();
      if (joined) chat.emit('leave:conversation', conversationId);
      joined = false;
      conversationId = picker.value;
      byId('conversation-id').textContent = conversationId;
      members.clear();
      typing.clear();
      renderPresence();
      renderTyping();
      byId('messages').replaceChildren();
      byId('chat-error').textContent = '';
      if (chat.connected) join();
    });

    chat.on('disconnect', () => {
      joined = false;
      typingSent = false;
      typing.clear();
      renderTyping();
    });

    chat.on('user:joined', (event) => {
      if (!current(event)) return;
      if (event.userName) names.set(event.userId, event.userName);
      members.add(event.userId);
      renderPresence();
    });
    chat.on('user:left', (event) => {
      if (!current(event)) return;
      members.delete(event.userId);
      typing.delete(event.userId);
      renderPresence();
      renderTyping();
    });
    chat.on('user:typing', (event) => {
      if (!current(event)) return;
      typing.set(event.userId, event.userName || nameOf(event.userId));
      renderTyping();
    });
    chat.on('user:stopped_typing', (event) => {
      if (!current(event)) return;
      typing.delete(event.userId);
      renderTyping();
    });
    chat.on('new:message', (message) => {
      if (!current(message)) return;
      typing.delete(message.senderId);
      renderTyping();
      const item = element('li', undefined, message.senderId === me.id ? 'mine' : '');
      item.dataset.testid = 'chat-message';
      item.append(
        clock(message.timestamp),
        element('strong', message.senderName || nameOf(message.senderId)),
        element('span', message.content),
      );
      const list = byId('messages');
      list.append(item);
      item.scrollIntoView({block: 'nearest'});
    });

    byId('chat-input').addEventListener('input', () => {
      if (!joined) return;
      if (!typingSent) {
        typingSent = true;
        chat.emit('typing:start', conversationId);
      }
      clearTimeout(typingTimer);
      typingTimer = setTimeout(stopTyping, TYPING_PAUSE_MS);
    });

    byId('chat-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = byId('chat-input');
      const content = input.value.trim();
      if (!content || !joined) return;
      stopTyping();
      chat.emit('send:message', {conversationId, content, type: 'text'}, (ack) => {
        byId('chat-error').textContent = ack.success ? '' : 'Not sent: ' + ack.error;
        if (ack.success) input.value = '';
      });
    });
  }

  // -- /updates ------------------------------------------------------------------------

  function setUpUpdates() {
    const updates = connect('/updates', 'updates');
    const subscribed = new Set();
    const status = byId('updates-status');

    byId('patient-ids').textContent = config.patientIds.join(', ');

    function setStatus(text, isError) {
      status.textContent = text;
      status.className = isError ? 'error' : '';
    }

    function renderSubscriptions() {
      byId('subscriptions').replaceChildren(...[...subscribed].map((patientId) => {
        const item = element('li', patientId + ' ');
        const stop = element('button', 'Stop');
        stop.type = 'button';
        stop.addEventListener('click', () => unsubscribe(patientId));
        item.append(stop);
        return item;
      }));
    }

    function subscribe(patientId) {
      updates.emit('subscribe:patient', patientId, (ack) => {
        if (ack.success) {
          subscribed.add(patientId);
          setStatus('Subscribed to ' + patientId + '; updates appear below.', false);
        } else if (ack.code === 'forbidden') {
          setStatus('Not allowed: updates of ' + patientId + ' (' + ack.error + ').', true);
        } else {
          setStatus('Refused: ' + ack.error, true);
        }
        renderSubscriptions();
      });
    }

    function unsubscribe(patientId) {
      updates.emit('unsubscribe', 'patient', patientId, (ack) => {
        subscribed.delete(patientId);
        setStatus(ack.success ? 'Stopped ' + patientId + '.' : 'Refused: ' + ack.error, !ack.success);
        renderSubscriptions();
      });
    }

    // A recovered socket is back in its rooms and gets the updates it missed first;
    // those are the ones stamped before it reconnected.
    let recovery = null;
    updates.on('connect', () => {
      if (updates.recovered) {
        recovery = {at: Date.now(), missed: 0};
        setStatus('Reconnected: no missed updates.', false);
      } else {
        recovery = null;
        subscribed.forEach(subscribe);
      }
    });
    updates.on('patient:update', (update) => {
      if (recovery && millis(update.timestamp) <= recovery.at) {
        recovery.missed += 1;
        setStatus('Reconnected: ' + recovery.missed + ' missed update' +
          (recovery.missed === 1 ? '' : 's') + ' delivered.', false);
      }
      const values = Object.entries(update.data || {})
        .map(([key, value]) => key + ' ' + value).join(' · ');
      const item = element('li');
      item.dataset.testid = 'update';
      item.append(
        clock(update.timestamp),
        element('strong', update.patientId + ' ' + update.updateType),
        element('span', values),
      );
      prependCapped(byId('updates'), item);
    });

    byId('updates-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const patientId = byId('patient-id').value.trim();
      if (patientId) subscribe(patientId);
    });
  }

  // -- admin: notify a role through the admin HTTP API ---------------------------------

  function setUpAdmin() {
    const form = byId('notify-form');
    const result = byId('notify-result');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const role = byId('notify-role').value;
      const body = {
        title: byId('notify-title').value,
        message: byId('notify-message').value,
        type: byId('notify-type').value,
      };
      result.textContent = 'Sending…';
      try {
        // Same origin: the session cookie authenticates the call.
        const response = await fetch('/api/socket.io/notify/role/' + encodeURIComponent(role), {
          method: 'POST',
          headers: {'Content-Type': 'application/json'},
          body: JSON.stringify(body),
        });
        const answer = await response.json();
        result.textContent = 'HTTP ' + response.status + ': ' + (answer.success
          ? 'sent to role ' + role + ' (notification ' + answer.data.notification.id + ')'
          : answer.error + ' [' + answer.code + ']');
        result.className = 'result ' + (response.ok ? 'ok' : 'bad');
      } catch (error) {
        result.textContent = 'Request failed: ' + error.message;
        result.className = 'result bad';
      }
    });
  }

  setUpMain();
  setUpNotifications();
  setUpChat();
  setUpUpdates();
  setUpAdmin();
})();
