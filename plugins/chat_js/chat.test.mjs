// The JavaScript chat, tested through a real switchyard process
// (sdk/js/testing.js). Run from the repository root:
//
//   SWITCHYARD_PLUGINS=target/test-plugins/sdk SWITCHYARD_BIN=target/debug/switchyard \
//     node --test plugins/chat_js/

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { SwitchyardServer, WebsocketCommunicator } from '../../sdk/js/testing.js';

const room = (name) => `/ws/chat-js/${name}/`;
let server;

before(async () => {
  server = await new SwitchyardServer().start();
});
after(() => server.stop());

async function joined(name) {
  const communicator = new WebsocketCommunicator(server, room(name));
  const [connected] = await communicator.connect();
  assert.ok(connected);
  return communicator;
}

test('a message reaches the room and only the room', async () => {
  const [alice, bob, carol] = [await joined('lobby'), await joined('lobby'), await joined('other')];
  await alice.sendJsonTo({ message: 'hello' });
  assert.deepEqual(await alice.receiveJsonFrom(), { message: 'hello' });
  assert.deepEqual(await bob.receiveJsonFrom(), { message: 'hello' });
  await carol.sendJsonTo({ message: 'marker' });
  // Had alice's message reached carol, it would come before the marker.
  assert.deepEqual(await carol.receiveJsonFrom(), { message: 'marker' });
  for (const communicator of [alice, bob, carol]) await communicator.disconnect();
});

test('bad JSON is answered', async () => {
  const communicator = await joined('errors');
  await communicator.sendTo('{not json');
  assert.equal((await communicator.receiveJsonFrom()).error, 'invalid_json');
  await communicator.sendJsonTo({ text: 'no message' });
  assert.equal((await communicator.receiveJsonFrom()).error, 'missing_message');
  assert.ok(await communicator.receiveNothing());
  await communicator.disconnect();
});

test('a group send from the test reaches the members', async () => {
  const communicator = await joined('news');
  const report = await server.groupSend('chat_news', { type: 'chat.message', message: 'from the test' });
  assert.equal(report.delivered, 1);
  assert.deepEqual(await communicator.receiveJsonFrom(), { message: 'from the test' });
  await communicator.disconnect();
});

test('an event without a handler closes that connection with 1011', async () => {
  const [doomed, calm] = [await joined('boom'), await joined('calm')];
  await server.groupSend('chat_boom', { type: 'chat.explode' });
  assert.equal(await doomed.receiveClose(), 1011);
  await calm.sendJsonTo({ message: 'still here' });
  assert.deepEqual(await calm.receiveJsonFrom(), { message: 'still here' });
  await calm.disconnect();
});

test('a bad room name is refused with 403', async () => {
  const [connected, status] = await new WebsocketCommunicator(server, room('caf%C3%A9')).connect();
  assert.deepEqual([connected, status], [false, 403]);
});
