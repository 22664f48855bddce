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
  /** Median µs from the write to the reply's arrival. */
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

/** Keeps this thread on its CPU for `ms`, as a turn's own work does, without yielding. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

export async function measureWakeUp(port: number, pings: number, busyMs = 0.5): Promise<WakeUpResult> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    let replied: () => void = () => undefined;
    socket.on('data', () => replied());
    const run = async (busy: number): Promise<PingTimes> => {
      const writes: number[] = [];
      const roundTrips: number[] = [];
      const warmup = Math.ceil(pings / 10);
      for (let i = 0; i < warmup + pings; i += 1) {
        const reply = new Promise<void>((resolve) => {
          replied = resolve;
        });
        if (busy > 0) spin(busy);
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
