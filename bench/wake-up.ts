import { connect } from 'node:net';
import { median } from './stats';

/**
 * What the host charges for a round trip to a redis-server that has been idle, as it is between a
 * turn's two round trips (the turn spends that time on its CPU: parsing, the upstream call): a
 * bare PING on a connection of its own, sent back to back, and sent after this process has kept
 * its core busy for a while. On a VM whose idle cores halt, the second pays for waking
 * redis-server's core: the write that wakes it takes longer, and so does the reply.
 */

export interface PingTimes {
  /** Median µs of the `write()` call that sends the PING (the system call that wakes redis-server). */
  readonly writeUs: number;
  /** Median µs from the write to the whole reply's arrival. */
  readonly roundTripUs: number;
}

export interface WakeUpResult {
  readonly pings: number;
  readonly backToBack: PingTimes;
  readonly afterBusy: PingTimes;
  /** How long this process kept its core busy before each PING of `afterBusy`. */
  readonly busyMs: number;
}

const PING = Buffer.from('PING\r\n');
const PONG = '+PONG\r\n';
const REPLY_TIMEOUT_MS = 5000;

/** Keeps this thread on its CPU for `ms`, as a turn's own work does, without yielding. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

export async function measureWakeUp(port: number, pings: number, busyMs = 0.5): Promise<WakeUpResult> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  // The one pending PING: settled by its whole reply, or failed by the connection.
  let pending: { resolve: () => void; reject: (error: Error) => void } | undefined;
  let received = '';
  let failure: Error | undefined;
  const fail = (error: Error) => {
    failure ??= error;
    pending?.reject(failure);
    pending = undefined;
  };
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('wake-up: redis-server closed the connection')));
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    if (received.length < PONG.length) return;
    if (received !== PONG)
      return fail(new Error(`wake-up: unexpected reply to PING: ${JSON.stringify(received)}`));
    received = '';
    pending?.resolve();
    pending = undefined;
  });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const ping = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        if (failure !== undefined) return reject(failure);
        const timer = setTimeout(
          () => fail(new Error('wake-up: no reply to PING in time')),
          REPLY_TIMEOUT_MS,
        );
        pending = {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
      });
    const run = async (busy: number): Promise<PingTimes> => {
      const writes: number[] = [];
      const roundTrips: number[] = [];
      const warmup = Math.ceil(pings / 10);
      for (let i = 0; i < warmup + pings; i += 1) {
        if (busy > 0) spin(busy);
        const reply = ping();
        const t0 = performance.now();
        socket.write(PING);
        const t1 = performance.now();
        await reply;
        const t2 = performance.now();
        if (i < warmup) continue;
        writes.push((t1 - t0) * 1000);
        roundTrips.push((t2 - t0) * 1000);
      }
      return { writeUs: median(writes), roundTripUs: median(roundTrips) };
    };
    const backToBack = await run(0);
    const afterBusy = await run(busyMs);
    return { pings, backToBack, afterBusy, busyMs };
  } finally {
    socket.destroy();
  }
}
