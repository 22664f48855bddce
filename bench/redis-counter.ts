import type { RedisClient } from '../functions/shared/redis';

/**
 * Counts the commands a Redis client sends and groups them into round trips, by patching the
 * client's `sendCommand` (every command goes through it: plain calls, scripts by EVALSHA, and each
 * command of a MULTI/pipeline).
 *
 * A round trip is a batch of commands written before any reply could be waited for: the first
 * command opens a batch, and commands sent while it is open join it. The batch closes at the next
 * macrotask (`setImmediate`), or as soon as a reply to one of its commands arrives, whichever is
 * first: a command sent after a reply was read cannot have shared that round trip.
 */
export interface RedisCounter {
  /** Starts a fresh count. */
  start(): void;
  /** Stops counting and answers the batches seen. */
  stop(): Batch[];
}

export interface Batch {
  /** Command names, in the order sent. */
  readonly commands: string[];
  /** When the first command was sent (performance.now()). */
  readonly sentAt: number;
  /** From the first command sent to the last reply of the batch, in ms (NaN until one settles). */
  waitMs: number;
}

interface Command {
  readonly name: string;
  readonly promise: Promise<unknown>;
}

type SendCommand = (command: Command, ...rest: unknown[]) => unknown;

export function instrument(client: RedisClient): RedisCounter {
  const target = client as unknown as { sendCommand: SendCommand };
  const original = target.sendCommand;
  let counting = false;
  let batches: Batch[] = [];
  let open: Batch | undefined;

  target.sendCommand = function (this: unknown, command: Command, ...rest: unknown[]) {
    if (counting) {
      let batch = open;
      if (batch === undefined) {
        const opened: Batch = { commands: [], sentAt: performance.now(), waitMs: Number.NaN };
        batch = opened;
        open = opened;
        batches.push(opened);
        setImmediate(() => {
          if (open === opened) open = undefined;
        });
      }
      const current = batch;
      current.commands.push(command.name.toUpperCase());
      const settled = () => {
        if (open === current) open = undefined;
        const wait = performance.now() - current.sentAt;
        current.waitMs = Number.isNaN(current.waitMs) ? wait : Math.max(current.waitMs, wait);
      };
      // Attached before the caller's own handlers, so it runs before any follow-up command is sent.
      command.promise.then(settled, settled);
    }
    return original.call(this, command, ...rest);
  } as SendCommand;

  return {
    start: () => {
      batches = [];
      open = undefined;
      counting = true;
    },
    stop: () => {
      counting = false;
      open = undefined;
      return batches;
    },
  };
}
