// Testing a plugin from node:test, in the shape of Channels'
// `WebsocketCommunicator`: a real `switchyard` process on 127.0.0.1:0
// serving a plugin directory on the in-memory layer, real WebSocket clients
// (the `ws` package), group sends through the publish API.
//
//   import { SwitchyardServer, WebsocketCommunicator } from '.../sdk/js/testing.js';
//   const server = await new SwitchyardServer({ plugins: 'target/plugins' }).start();
//   const chat = new WebsocketCommunicator(server, '/ws/chat-js/lobby/');
//   const [connected] = await chat.connect();
//   await chat.sendJsonTo({ message: 'hi' });
//   assert.deepEqual(await chat.receiveJsonFrom(), { message: 'hi' });
//   await server.groupSend('chat_lobby', { type: 'chat.message', message: 'x' });
//   await chat.disconnect();
//   await server.stop();
//
// The binary is `SWITCHYARD_BIN` or `switchyard` on PATH; the plugin
// directory defaults to `SWITCHYARD_PLUGINS`.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const LISTENING = 'Switchyard listening on http://';

/** A `switchyard serve` process on a free loopback port. */
export class SwitchyardServer {
  constructor({ plugins, binary, args = [], startTimeoutMs = 300_000 } = {}) {
    this.plugins = plugins ?? process.env.SWITCHYARD_PLUGINS;
    if (!this.plugins) throw new Error('no plugin directory: pass plugins or set SWITCHYARD_PLUGINS');
    if (!existsSync(this.plugins)) throw new Error(`plugin directory ${this.plugins} does not exist`);
    this.binary = binary ?? process.env.SWITCHYARD_BIN ?? 'switchyard';
    this.args = args;
    this.startTimeoutMs = startTimeoutMs;
    this.token = randomBytes(16).toString('hex');
    this.address = null;
    this.output = [];
  }

  /** Starts the server and resolves once it says where it listens. */
  start() {
    this.process = spawn(
      this.binary,
      ['serve', '-b', '127.0.0.1', '-p', '0', '--plugins', this.plugins, '--admin-token', this.token, ...this.args],
      { env: { RUST_LOG: 'warn', ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error('switchyard did not start listening in time')), this.startTimeoutMs);
      const fail = (err) => {
        clearTimeout(timer);
        this.process.kill();
        reject(new Error(`${err.message}; its output:\n${this.output.join('\n')}`));
      };
      this.process.on('error', (err) => fail(new Error(`cannot run ${this.binary}: ${err.message}`)));
      this.process.on('exit', (code) => {
        if (!this.address) fail(new Error(`switchyard exited with ${code}`));
      });
      createInterface({ input: this.process.stdout }).on('line', (line) => {
        this.output.push(line);
        if (!this.address && line.startsWith(LISTENING)) {
          this.address = line.slice(LISTENING.length).split(/\s/)[0];
          clearTimeout(timer);
          resolve(this);
        }
      });
    });
  }

  /** Stops the server (SIGTERM) and waits for it to exit. */
  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGTERM');
    await exited;
  }

  /** The `ws://` URL of `path`. */
  url(path) {
    return `ws://${this.address}${path}`;
  }

  async publish(endpoint, body) {
    const response = await fetch(`http://${this.address}/_switchyard/${endpoint}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    if (response.status !== 202) throw new Error(`${endpoint} answered ${response.status}: ${text}`);
    return JSON.parse(text);
  }

  /** Publishes `event` to `group`; resolves to `{delivered, over_capacity}`. */
  groupSend(group, event) {
    return this.publish('group-send', { group, event });
  }

  /** Publishes `event` to one channel. */
  send(channel, event) {
    return this.publish('send', { channel, event });
  }
}

/** One WebSocket client of a SwitchyardServer, with Channels' communicator methods. */
export class WebsocketCommunicator {
  constructor(server, path, { subprotocols = [], headers = {} } = {}) {
    this.server = server;
    this.path = path;
    this.subprotocols = subprotocols;
    this.headers = headers;
    this.frames = [];
    this.waiters = [];
    this.closeCode = null;
  }

  /** Connects: `[true, subprotocol]`, or `[false, status]` when refused (a 503
   * from a plugin still loading is retried for `timeoutMs`). */
  async connect(timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = await this.#open();
      if (result[0] || result[1] !== 503 || Date.now() > deadline) return result;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  #open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.server.url(this.path), this.subprotocols, { headers: this.headers });
      ws.on('unexpected-response', (_req, res) => resolve([false, res.statusCode]));
      ws.on('error', reject);
      ws.on('open', () => {
        this.ws = ws;
        resolve([true, ws.protocol || null]);
      });
      ws.on('message', (data, isBinary) => this.#push({ data: isBinary ? new Uint8Array(data) : data.toString() }));
      ws.on('close', (code) => {
        this.closeCode = code;
        this.#push({ closed: code });
      });
    });
  }

  #push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.frames.push(item);
  }

  #next(timeoutMs) {
    if (this.frames.length > 0) return Promise.resolve(this.frames.shift());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(take), 1);
        resolve({ timeout: true });
      }, timeoutMs);
      const take = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.waiters.push(take);
    });
  }

  /** Sends a text frame (a string) or a binary one (a Uint8Array). */
  async sendTo(data) {
    await new Promise((resolve, reject) => this.ws.send(data, (err) => (err ? reject(err) : resolve())));
  }

  /** Sends `data` as a JSON text frame. */
  sendJsonTo(data) {
    return this.sendTo(JSON.stringify(data));
  }

  /** The next frame (string or Uint8Array); rejects after `timeoutMs` or on close. */
  async receiveFrom(timeoutMs = 5000) {
    const item = await this.#next(timeoutMs);
    if (item.timeout) throw new Error(`no frame within ${timeoutMs} ms`);
    if (item.closed !== undefined) throw new Error(`the connection closed (${item.closed})`);
    return item.data;
  }

  /** The next frame, a text frame, decoded as JSON. */
  async receiveJsonFrom(timeoutMs = 5000) {
    const data = await this.receiveFrom(timeoutMs);
    if (typeof data !== 'string') throw new Error('expected a text frame, got a binary one');
    return JSON.parse(data);
  }

  /** True when no frame arrives within `timeoutMs`. */
  async receiveNothing(timeoutMs = 100) {
    const item = await this.#next(timeoutMs);
    if (item.data !== undefined) {
      this.frames.unshift(item);
      return false;
    }
    return true;
  }

  /** Waits for the server to close; resolves to its close code. */
  async receiveClose(timeoutMs = 5000) {
    for (;;) {
      const item = await this.#next(timeoutMs);
      if (item.timeout) throw new Error(`not closed within ${timeoutMs} ms`);
      if (item.closed !== undefined) return item.closed;
    }
  }

  /** Closes the connection and waits for the server's answer. */
  async disconnect(code = 1000) {
    if (!this.ws || this.closeCode !== null) return;
    const closed = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close(code);
    await closed;
  }
}
