// {{name}} tested through a real switchyard process serving dist/
// (`switchyard build` first). The binary is SWITCHYARD_BIN or switchyard
// on PATH.

import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { SwitchyardServer, WebsocketCommunicator } from '{{sdk}}/sdk/js/testing.js';

const dist = fileURLToPath(new URL('./dist/', import.meta.url));
let server;

before(async () => {
  server = await new SwitchyardServer({ plugins: dist }).start();
});
after(() => server.stop());

async function joined(room) {
  const communicator = new WebsocketCommunicator(server, `/ws/{{name}}/${room}/`);
  const [connected] = await communicator.connect();
  assert.ok(connected);
  return communicator;
}

test('a message reaches the room and only the room', async () => {
  const [alice, bob, carol] = [await joined('lobby'), await joined('lobby'), await joined('other')];
  await alice.sendJsonTo({ message: 'hello' });
  assert.deepEqual(await alice.receiveJsonFrom(), { message: 'hello' });
  assert.deepEqual(await bob.receiveJsonFrom(), { message: 'hello' });
  assert.ok(await carol.receiveNothing());
  const report = await server.groupSend('{{name}}_other', { type: 'room.message', message: 'from the test' });
  assert.equal(report.delivered, 1);
  assert.deepEqual(await carol.receiveJsonFrom(), { message: 'from the test' });
  for (const communicator of [alice, bob, carol]) await communicator.disconnect();
});
