"""Why a Ray sweep's Ctrl-C does not use `ray.cancel`: short tasks that catch KeyboardInterrupt
and return (as actexp's runs do, saving themselves as interrupted) are stopped, round after round,
at random moments around their end, on a Ray instance of this machine.

- mode `cancel`: the driver calls `ray.cancel` on them. A cancel that meets a task ending on its
  own can abort the driver process inside Ray ("Check failed: it != submissible_tasks_.end() Tried
  to complete task that was not pending").
- mode `inbox`: the driver tells them through an actor and each stops itself, as
  `actexp.backends.raycluster` does (its `run_interruptibly`; one actor for all rounds here, which
  holds the last round stopped, where a sweep has one `_Inbox` with one flag).

Each mode runs in a child process (an abort takes the driver with it); the script prints, per mode,
how many rounds ran, what the tasks returned, and how the driver ended.

    python bench/ray_stop_race.py --seconds 120            # both modes, 120 s each
    python bench/ray_stop_race.py --modes cancel --seed 1
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time

TASK_SECONDS = 0.05


def work(seconds: float) -> str:
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            pass
        return "done"
    except KeyboardInterrupt:
        return "interrupted"


class Rounds:
    """The last round the driver stopped (a Ray actor)."""

    def __init__(self):
        self.stopped = -1

    def stop(self, round: int) -> None:
        self.stopped = round

    def stopping(self, round: int) -> bool:
        return self.stopped >= round


def child(mode: str, seconds: float, seed: int) -> None:
    import ray

    from actexp.backends.raycluster import run_interruptibly

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rounds_actor = ray.remote(num_cpus=0)(Rounds).remote()

    def stopped_by_itself(round, seconds):
        return run_interruptibly(lambda: work(seconds), lambda: ray.get(rounds_actor.stopping.remote(round)), every=0.02) or "interrupted"

    task = ray.remote(max_retries=0)(work if mode == "cancel" else stopped_by_itself)
    rng, counts, rounds, start = random.Random(seed), {}, 0, time.time()
    while time.time() - start < seconds:
        refs = [task.remote(TASK_SECONDS) if mode == "cancel" else task.remote(rounds, TASK_SECONDS) for _ in range(2)]
        time.sleep(rng.uniform(0, 2.5 * TASK_SECONDS))
        if mode == "cancel":
            for ref in refs:
                ray.cancel(ref)
        else:
            rounds_actor.stop.remote(rounds)
        for ref in refs:
            try:
                out = ray.get(ref)
            except Exception as e:
                out = type(e).__name__
            counts[out] = counts.get(out, 0) + 1
        rounds += 1
        if rounds % 100 == 0:
            print(f"{mode}: {rounds} rounds in {time.time() - start:.0f} s, tasks returned {counts}", flush=True)
    print(f"{mode}: {rounds} rounds in {time.time() - start:.0f} s, tasks returned {counts}", flush=True)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="how long each mode churns")
    parser.add_argument("--modes", default="cancel,inbox")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.seconds, args.seed)
    for mode in args.modes.split(","):
        began = time.time()
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds), "--seed", str(args.seed)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(mode)]
        crash = next((line for line in done.stderr.splitlines() if "Check failed" in line), None)
        print(lines[-1] if lines else f"{mode}: no round finished")
        print(f"  driver exit code {done.returncode} after {time.time() - began:.0f} s" + (f"; Ray aborted it: {crash.split('Check failed: ')[1][:90]}" if crash else ""))


if __name__ == "__main__":
    main()
