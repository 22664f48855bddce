import { createServer, type Server, Socket } from 'node:net';

/** What happens to the reply to the next request that carries a marker. */
type Fault =
  | { readonly markers: readonly string[]; readonly kind: 'lose' }
  | { readonly markers: readonly string[]; readonly kind: 'delay'; readonly ms: number };

export interface RedisProxy {
  /** A redis:// URL that reaches Redis through the proxy. */
  readonly url: string;
  /**
   * The next write from a client that contains `marker` reaches Redis (so it runs), but its reply
   * never comes back: the client's connection is cut as the reply arrives, as when a network
   * drops between the two. Later connections pass untouched.
   */
  loseReplyTo(marker: string | readonly string[]): void;
  /**
   * The reply to the next write that contains `marker` (or any of several: a script goes out as
   * EVAL with its body on a connection's first use, as EVALSHA with its SHA after) reaches the
   * client `ms` late.
   */
  delayReplyTo(marker: string | readonly string[], ms: number): void;
  /** Whether the last fault armed has happened. */
  readonly triggered: boolean;
  /** Resolves once the last fault armed has done its work (the connection cut, the reply sent). */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a Redis server that can lose or delay one reply, for tests of what a
 * client does when a command ran but its answer did not arrive. It matches on the bytes of the
 * RESP request, so a marker is best a value only that command carries (a message's content), and
 * the command should be the only one in flight on its connection: the next bytes from Redis are
 * taken to be its reply.
 */
export async function startRedisProxy(target: { host: string; port: number }): Promise<RedisProxy> {
  let fault: Fault | undefined;
  let triggered = false;
  let done = Promise.resolve();
  let markDone = () => {};
  const arm = (next: Fault) => {
    fault = next;
    triggered = false;
    done = new Promise<void>((resolve) => {
      markDone = resolve;
    });
  };
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = new Socket();
    sockets.add(client);
    sockets.add(upstream);
    // Set once this connection's request carries the marker: its next reply is the one to hit.
    let hit: Fault | undefined;
    upstream.connect(target.port, target.host);
    client.on('data', (chunk: Buffer) => {
      if (fault?.markers.some((marker) => chunk.includes(marker))) {
        hit = fault;
        fault = undefined;
        triggered = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (hit?.kind === 'lose') {
        client.destroy();
        upstream.destroy();
        markDone();
        return;
      }
      if (hit?.kind === 'delay') {
        const ms = hit.ms;
        hit = undefined;
        client.pause();
        upstream.pause();
        setTimeout(() => {
          if (!client.destroyed) client.write(chunk);
          client.resume();
          upstream.resume();
          markDone();
        }, ms);
        return;
      }
      client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', close);
    upstream.on('error', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('the proxy has no port');

  return {
    url: `redis://127.0.0.1:${address.port}`,
    loseReplyTo(marker) {
      arm({ markers: [marker].flat(), kind: 'lose' });
    },
    delayReplyTo(marker, ms) {
      arm({ markers: [marker].flat(), kind: 'delay', ms });
    },
    get triggered() {
      return triggered;
    },
    settled: () => done,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
