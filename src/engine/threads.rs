//! libtorch's CPU threads sized to what other processes leave: every thread while the machine
//! is this run's own, else the count its batches show to be faster. Looked at between
//! batches; never blocks (one read of two small `/proc` files a second).
//!
//! Why: libtorch's OpenMP threads spin at the end of each parallel region, waiting for the
//! next one. Alone on a machine that is the fastest (passive waiting cost a third of the
//! throughput here); beside another busy process it is a collapse: two runs on two cores
//! explained 10 + 10 frames/s where one alone explains 67, because each spinning thread holds
//! a core the other process's thread is waiting for at its barrier. One thread needs no
//! barrier, but alone it leaves a core idle. Which is faster beside other processes depends
//! on what they do (another gradcam-stream: one thread; camera servers encoding at a low
//! duty: all), so the batches decide.

use std::time::{Duration, Instant};

/// How often the machine's load is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// CPU time: the whole machine's busy time and this process's, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    machine_busy: u64,
    own: u64,
}

fn read_sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(Sample {
        at: Instant::now(),
        machine_busy: machine_busy(&stat)?,
        own: own_ticks(&own)?,
    })
}

/// `/proc/stat`'s first line: user, nice, system, idle, iowait, irq, softirq, steal, …; busy
/// is all but idle and iowait.
fn machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// `/proc/self/stat`: utime and stime, the 14th and 15th fields (after the command, which
/// is in parentheses and may hold spaces).
fn own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at the 3rd field (state).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sets libtorch's threads as the load changes (see the module's doc). Alone on the machine
/// (other processes keep less than `BUSY_OTHERS` of a core busy) every thread; otherwise the
/// thread count the batches themselves show to be faster: every `PROBE_EVERY` the other
/// candidate (one thread, or all) runs `PROBE_BATCHES` batches, and the faster per frame
/// stays.
pub struct Governor {
    max: usize,
    current: usize,
    last: Option<Sample>,
    ticks_per_s: f64,
    /// Whether other processes were busy at the last look.
    crowded: bool,
    /// Seconds per frame at one thread and at `max`, from the latest batches of each.
    per_frame: [Option<f64>; 2],
    /// When the last comparison ended, and the batches left in a running one.
    compared: Instant,
    probing: u32,
}

/// Other processes' load (cores) under which the machine counts as this run's own.
const BUSY_OTHERS: f64 = 0.3;
const PROBE_EVERY: Duration = Duration::from_secs(15);
const PROBE_BATCHES: u32 = 3;

impl Governor {
    /// For a CPU run at libtorch's default thread count; None where `/proc` cannot be read
    /// or there is one thread anyway.
    pub fn new() -> Option<Governor> {
        let max = tch::get_num_threads().max(1) as usize;
        // SAFETY: sysconf only reads a constant.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks_per_s > 0.0 && max > 1).then_some(())?;
        Some(Governor {
            max,
            current: max,
            last: Some(read_sample()?),
            ticks_per_s,
            crowded: false,
            per_frame: [None, None],
            compared: Instant::now(),
            probing: 0,
        })
    }

    fn slot(&self, threads: usize) -> usize {
        usize::from(threads == self.max)
    }

    fn set(&mut self, threads: usize) {
        if threads != self.current {
            tch::set_num_threads(threads as i32);
            self.current = threads;
        }
    }

    /// Other processes' load in cores since the last look (None: not a second yet).
    fn others(&mut self) -> Option<f64> {
        let last = self.last?;
        if last.at.elapsed() < EVERY {
            return None;
        }
        let now = read_sample()?;
        let secs = now.at.duration_since(last.at).as_secs_f64();
        let machine = now.machine_busy.saturating_sub(last.machine_busy) as f64;
        let own = now.own.saturating_sub(last.own) as f64;
        self.last = Some(now);
        Some(((machine - own) / self.ticks_per_s / secs).max(0.0))
    }

    /// A batch of `frames` took `took` on the model at the current thread count: keep it, and
    /// set the thread count for the next batch.
    pub fn record(&mut self, frames: usize, took: Duration) {
        let others = self.others();
        let next = self.decide(frames, took, others, Instant::now());
        self.set(next);
    }

    /// The decision alone, from the batch's time, the other processes' load (None: no new
    /// reading) and the time now: the thread count for the next batch. `/proc` and libtorch
    /// stay outside, so a test gives it the readings.
    fn decide(
        &mut self,
        frames: usize,
        took: Duration,
        others: Option<f64>,
        now: Instant,
    ) -> usize {
        let slot = self.slot(self.current);
        self.per_frame[slot] = Some(took.as_secs_f64() / frames.max(1) as f64);
        if let Some(others) = others {
            self.crowded = others >= BUSY_OTHERS;
        }
        if !self.crowded {
            self.probing = 0;
            return self.max;
        }
        if self.probing > 0 {
            self.probing -= 1;
            if self.probing > 0 {
                return self.current;
            }
            self.compared = now;
            return match self.per_frame {
                [Some(one), Some(all)] if one < all => 1,
                [Some(_), Some(_)] => self.max,
                _ => self.current,
            };
        }
        if now.duration_since(self.compared) >= PROBE_EVERY || self.per_frame.contains(&None) {
            // Try the other candidate for a few batches (the current one's time is fresh).
            self.probing = PROBE_BATCHES;
            return if self.current == self.max {
                1
            } else {
                self.max
            };
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3\n";
        assert_eq!(machine_busy(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        let own = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 77 33 0 0";
        assert_eq!(own_ticks(own), Some(110));
        assert!(read_sample().is_some(), "this Linux's /proc");
    }

    fn governor(max: usize, start: Instant) -> Governor {
        Governor {
            max,
            current: max,
            last: None,
            ticks_per_s: 100.0,
            crowded: false,
            per_frame: [None, None],
            compared: start,
            probing: 0,
        }
    }

    /// Feed `g` a batch of 8 frames at `per_frame` seconds each at its current count, and
    /// take its decision as the count.
    fn step(g: &mut Governor, per_frame: f64, others: Option<f64>, now: Instant) -> usize {
        let took = Duration::from_secs_f64(per_frame * 8.0);
        g.current = g.decide(8, took, others, now);
        g.current
    }

    #[test]
    fn alone_every_thread_crowded_the_faster_count_and_again_every_15_s() {
        let t0 = Instant::now();
        let mut g = governor(4, t0);
        // Alone: every thread, whatever the batches' times.
        assert_eq!(step(&mut g, 0.01, Some(0.1), t0), 4);
        assert_eq!(step(&mut g, 0.01, None, t0), 4);
        // Crowded: one thread is tried for 3 batches, and here it is faster, so it stays.
        assert_eq!(step(&mut g, 0.03, Some(1.5), t0), 1);
        assert_eq!(step(&mut g, 0.02, None, t0), 1);
        assert_eq!(step(&mut g, 0.02, None, t0), 1);
        assert_eq!(step(&mut g, 0.02, None, t0), 1, "one thread was faster");
        assert_eq!(step(&mut g, 0.02, None, t0 + Duration::from_secs(5)), 1);
        // 15 s later every thread is tried again; now it is the faster, so it stays.
        let later = t0 + Duration::from_secs(16);
        assert_eq!(step(&mut g, 0.02, None, later), 4);
        assert_eq!(step(&mut g, 0.01, None, later), 4);
        assert_eq!(step(&mut g, 0.01, None, later), 4);
        assert_eq!(
            step(&mut g, 0.01, None, later),
            4,
            "every thread was faster"
        );
        // The crowd leaves: every thread at once.
        let mut g = governor(4, t0);
        step(&mut g, 0.03, Some(1.5), t0);
        assert_eq!(g.current, 1, "probing one thread");
        assert_eq!(step(&mut g, 0.05, Some(0.0), t0), 4);
        assert_eq!(g.probing, 0);
    }
}
