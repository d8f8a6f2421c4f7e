// The clinic dashboard: four socket.io namespaces multiplexed over one connection,
// authenticated by the HttpOnly session cookie the login page set (same origin, so
// the browser sends it; this script never sees a token). Text from the server or
// other users is only ever put in the page with textContent.
(function () {
  'use strict';

  const config = JSON.parse(document.getElementById('clinic-config').textContent);
  const me = config.user;
  const TYPING_PAUSE_MS = 1500;
  const FEED_LIMIT = 50;

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

  // A <time> element showing the local time of an ISO timestamp.
  function clock(iso) {
    const node = element('time', new Date(iso).toLocaleTimeString());
    node.dateTime = iso;
    return node;
  }

  function prependCapped(list, item) {
    list.prepend(item);
    while (list.children.length > FEED_LIMIT) list.lastElementChild.remove();
  }

  // -- connections ------------------------------------------------------------------

  const sockets = [];

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
      const retrying = socket.active ? ', reconnecting…' : '';
      setState(key, 'disconnected (' + reason + ')' + retrying, 'bad');
    });
    socket.on('connect_error', (error) => {
      const data = error.data || {};
      if (data.code === 'unauthenticated') {
        setState(key, 'refused (' + (data.reason || 'unauthenticated') + ')', 'bad');
        showBanner('Your session is not valid any more: sign in again.', true);
      } else {
        setState(key, 'connection failed (' + error.message + '), retrying…', 'bad');
      }
    });
    socket.on('server:shutdown', (notice) => {
      showBanner((notice && notice.message) || 'The server is shutting down', false);
      // Leave promptly so the server can stop; a reload reconnects once it is back.
      sockets.forEach((each) => each.disconnect());
    });
    return socket;
  }

  function showBanner(text, withLogin) {
    const banner = byId('banner');
    banner.replaceChildren(element('span', text + ' '));
    if (withLogin) {
      const link = element('a', 'Sign in');
      link.href = '/';
      banner.append(link);
    } else {
      banner.append(element('span', 'Reload the page once it is back.'));
    }
    banner.hidden = false;
  }

  // -- / -------------------------------------------------------------------------------

  function setUpMain() {
    const main = connect('/', 'main');
    main.on('connected', (welcome) => {
      byId('welcome').textContent =
        'Welcome ' + nameOf(welcome.userId) + ': socket ' + welcome.socketId +
        ', server time ' + new Date(welcome.timestamp).toLocaleTimeString() + '.';
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
      updates.emit('unsubscribe', {resourceType: 'patient', resourceId: patientId}, (ack) => {
        subscribed.delete(patientId);
        setStatus(ack.success ? 'Stopped ' + patientId + '.' : 'Refused: ' + ack.error, !ack.success);
        renderSubscriptions();
      });
    }

    updates.on('connect', () => subscribed.forEach(subscribe));
    updates.on('patient:update', (update) => {
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
          ? 'sent to role ' + role + ' (notification ' + answer.notification.id + ')'
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
