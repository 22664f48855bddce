import { readFileSync } from 'node:fs';
import { cpuSeconds } from './procs';

/**
 * How busy the machine was during each phase, and how much of that was the bench itself (this
 * process, its children, and their children once reaped). On a shared machine the rest is other
 * people's work competing for the same cores, which slows and widens every figure.
 */

export interface PhaseLoad {
  readonly phase: string;
  readonly seconds: number;
  /** Cores busy on the whole machine, on average. */
  readonly machineCores: number;
  /** Cores the bench's own processes used, on average. */
  readonly benchCores: number;
}

const TICKS_PER_SECOND = 100;

function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const [, user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
    .trim()
    .split(/\s+/)
    .map(Number);
  void idle;
  void iowait;
  return (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND;
}

/** This process and its reaped descendants (utime, stime, cutime, cstime of /proc/self/stat). */
function selfAndReapedSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (
    (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / TICKS_PER_SECOND
  );
}

export class LoadTracker {
  readonly phases: PhaseLoad[] = [];
  private readonly live = new Set<number>();

  /** A long-lived child (redis-server, the dev server) whose CPU counts as the bench's while it runs. */
  watch(pid: number | undefined): void {
    if (pid !== undefined) this.live.add(pid);
  }

  private benchSeconds(): number {
    let total = selfAndReapedSeconds();
    for (const pid of this.live) {
      const seconds = cpuSeconds(pid);
      if (seconds === undefined) this.live.delete(pid);
      else total += seconds;
    }
    return total;
  }

  async phase<T>(name: string, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const machine = machineBusySeconds();
    const bench = this.benchSeconds();
    try {
      return await work();
    } finally {
      const seconds = (performance.now() - started) / 1000;
      if (seconds > 0.5) {
        this.phases.push({
          phase: name,
          seconds,
          machineCores: (machineBusySeconds() - machine) / seconds,
          benchCores: (this.benchSeconds() - bench) / seconds,
        });
      }
    }
  }
}
