//! `--precision auto` and `--layout auto`, decided by measurement rather than guessed from the
//! CPU's flags: at start the engine times a batch of the model's input size through the whole
//! explanation (forward, backward, CAM) in each candidate arithmetic and layout and keeps the
//! faster. The choice is remembered in a small file keyed by the model file and the machine,
//! so the next start with the same model takes it without timing anything.
//!
//! Candidates: fp32, and bf16 where the CPU has bf16 instructions, libtorch has the CPU
//! autocast and the map is convolutional (bf16's parity is established for those only); a GPU
//! stays fp32 under auto (fp16 changes the maps more: a choice for the user). Both layouts for
//! a convolutional map on every device; a transformer's token map keeps channels-last untimed
//! (only its patch embedding is a convolution, the one layer a layout changes). A setting
//! given explicitly is not measured.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::settings::{executor_for, resolve_precision};
use super::upload::to_float;
use super::{cpu_autocast, Engine, Settings};
use crate::model;
use crate::settings::named::{Layout as Memory, Named, Precision};

/// One arithmetic and layout the model may run in.
pub type Candidate = (Precision, Memory);

/// How the engine's arithmetic and layout were decided, for the start line.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Given (or left with one candidate): nothing to measure.
    Given,
    /// Timed at this start: each candidate's best time for one batch, in milliseconds.
    Measured {
        batch: i64,
        ms: Vec<(Candidate, f64)>,
    },
    /// Timed by an earlier start, remembered in this file (empty: earlier in this process,
    /// with no file to keep it in).
    Remembered(PathBuf),
}

/// The arithmetics and layouts worth timing for these settings (the first of each is what a
/// start that measures nothing runs in).
pub(super) fn candidates(
    s: &Settings,
    device: Device,
    info: &model::Sidecar,
) -> Result<Vec<Candidate>> {
    let precisions = match s.precision {
        Precision::Auto => {
            let mut p = vec![Precision::Fp32];
            // resolve_precision says, once, when the CPU has bf16 and libtorch cannot use it.
            let bf16 = resolve_precision(Precision::Auto, device)? == Precision::Bf16;
            if bf16 && info.plain_map() {
                p.push(Precision::Bf16);
            }
            p
        }
        p => vec![resolve_precision(p, device)?],
    };
    let layouts = match s.layout {
        Memory::Auto if info.plain_map() => vec![Memory::ChannelsLast, Memory::Contiguous],
        Memory::Auto => vec![Memory::ChannelsLast],
        l => vec![l],
    };
    Ok(precisions
        .iter()
        .flat_map(|&p| layouts.iter().map(move |&l| (p, l)))
        .collect())
}

/// The fastest of the timed candidates (the first listed on a tie).
pub fn fastest(ms: &[(Candidate, f64)]) -> Option<Candidate> {
    ms.iter()
        .fold(None::<&(Candidate, f64)>, |best, m| match best {
            Some(b) if b.1 <= m.1 => Some(b),
            _ => Some(m),
        })
        .map(|m| m.0)
}

impl Engine {
    /// Decide the arithmetic and layout among `candidates`: the only one, the one remembered
    /// for this model and machine, or the fastest timed now (then remembered).
    pub(super) fn tune(&mut self, s: &Settings, candidates: &[Candidate]) -> Result<Decided> {
        if let [only] = candidates {
            self.run_in(*only)?;
            return Ok(Decided::Given);
        }
        let key = key(s, self, candidates);
        let store = Store::here();
        if let Some(c) = recall(&key, store.as_ref()).filter(|c| candidates.contains(c)) {
            self.run_in(c)?;
            let file = store.map(|s| s.file).unwrap_or_default();
            return Ok(Decided::Remembered(file));
        }
        // At most 4 frames: the order of the candidates holds from there on, and a large
        // batch of a large model would hold the start up.
        let batch = self.bucket(s.batch_size.clamp(1, 4) as i64);
        let ms = self.time(candidates, batch)?;
        let best = fastest(&ms).expect("two candidates or more");
        remember(&key, best, store.as_ref());
        self.run_in(best)?;
        Ok(Decided::Measured { batch, ms })
    }

    /// Run from now on in `c` (libtorch's graph executor follows the precision).
    fn run_in(&mut self, (precision, layout): Candidate) -> Result<()> {
        self.precision = precision;
        self.layout = layout;
        executor_for(precision)
    }

    /// Each candidate's best time for a batch of `n`, in milliseconds. A pass is what a batch
    /// costs from the upload on: random frames of the model's input size (uint8 RGBx, as they
    /// arrive) made float in the layout, preprocessed, explained. Random, not zeros: zeros
    /// make denormal activations, which some kernels run many times slower. Per precision
    /// (libtorch's graph executor changes with it): each layout settles first (one pass; two
    /// under autocast, for TorchScript's profiling executor), then the layouts take turns for
    /// two rounds (one where a pass takes over `SLOW_MS`), so a burst of load elsewhere falls
    /// on both rather than on one.
    fn time(&mut self, candidates: &[Candidate], n: i64) -> Result<Vec<(Candidate, f64)>> {
        let [h, w] = self.model.info.input_size;
        let frames = Tensor::f_randint(256, [n, h, w, 4], (Kind::Uint8, self.device()))?;
        let mut timed: Vec<(Candidate, f64)> =
            candidates.iter().map(|&c| (c, f64::INFINITY)).collect();
        let mut precisions: Vec<Precision> = candidates.iter().map(|c| c.0).collect();
        precisions.dedup();
        for p in precisions {
            let turns: Vec<usize> = (0..timed.len()).filter(|&i| timed[i].0 .0 == p).collect();
            let settle = if p == Precision::Fp32 { 1 } else { 2 };
            let mut rounds = settle + 2;
            let mut round = 0;
            while round < rounds {
                for &i in &turns {
                    let c = timed[i].0;
                    self.run_in(c)?;
                    let t = Instant::now();
                    let x = self.model.preprocess(&to_float(&frames, c.1)?)?;
                    self.pass(&x).with_context(|| {
                        format!(
                            "explaining a batch of {n} frames at start (timing {} {} for --precision and --layout auto)",
                            c.0.name(),
                            c.1.name()
                        )
                    })?;
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    if round >= settle {
                        timed[i].1 = timed[i].1.min(ms);
                    } else if ms > SLOW_MS {
                        // A slow model: one timed round (the start waits less for it).
                        rounds = settle + 1;
                    }
                }
                round += 1;
            }
        }
        Ok(timed)
    }
}

/// A pass slower than this (a large model on a CPU) is timed once per candidate, not twice.
const SLOW_MS: f64 = 2000.0;

/// What the choice depends on: the model file (path, size, modification time), the machine
/// (CPU model, flags and cores, the device), this program's version, the model's input size,
/// and the candidates. Not the batch size: the program and the element (which batch
/// differently by default) must make the same choice for the same model, or their maps could
/// differ in the last bit. Not the method: the forward and backward passes cost the most.
fn key(s: &Settings, e: &Engine, candidates: &[Candidate]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let file = std::fs::canonicalize(&s.model).unwrap_or_else(|_| s.model.clone());
    file.hash(&mut h);
    if let Ok(m) = std::fs::metadata(&file) {
        m.len().hash(&mut h);
        m.modified().ok().hash(&mut h);
    }
    cpu_identity().hash(&mut h);
    model::device_name(e.device()).hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    e.model.info.input_size.hash(&mut h);
    e.boxes.is_some().hash(&mut h);
    candidates.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The CPU's model name and flags (`/proc/cpuinfo`'s first processor), and whether libtorch
/// can run bf16 here.
fn cpu_identity() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "{}|{}|{}|{}",
        first("model name"),
        first("flags"),
        crate::parallel::cores(),
        cpu_autocast::available()
    )
}

/// Where choices are remembered: `$GRADCAM_CACHE_DIR`, else `$XDG_CACHE_HOME/gradcam-stream`,
/// else `~/.cache/gradcam-stream`; `GRADCAM_CACHE_DIR=off` keeps nothing.
struct Store {
    file: PathBuf,
}

impl Store {
    fn here() -> Option<Store> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = match var("GRADCAM_CACHE_DIR") {
            Some(d) if d == Path::new("off") => return None,
            Some(d) => d,
            None => var("XDG_CACHE_HOME")
                .or_else(|| var("HOME").map(|h| h.join(".cache")))?
                .join("gradcam-stream"),
        };
        Some(Store {
            file: dir.join("tuned"),
        })
    }

    /// Each remembered key and its choice, as `key precision layout` lines.
    fn read(&self) -> Vec<(String, Candidate)> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (k, p, m) = (f.next()?, f.next()?, f.next()?);
                let p = Precision::parse_named("precision", p).ok()?;
                let m = Memory::parse_named("layout", m).ok()?;
                Some((k.to_owned(), (p, m)))
            })
            .collect()
    }

    /// Add (or replace) `key`'s choice, keeping the newest 500; written whole to a temporary
    /// file and renamed over the old, so a reader never sees half a file. A failure to write
    /// costs only the next start's measurement.
    fn write(&self, key: &str, c: Candidate) -> std::io::Result<()> {
        let mut all: Vec<_> = self.read().into_iter().filter(|(k, _)| k != key).collect();
        all.push((key.to_owned(), c));
        let keep = all.len().saturating_sub(500);
        let text: String = all[keep..]
            .iter()
            .map(|(k, (p, m))| format!("{k} {} {}\n", p.name(), m.name()))
            .collect();
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tuned.{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.file)
    }
}

/// Choices made in this process, whatever the file: two engines of one process (the program's
/// tests, a pipeline with two elements) always agree.
static MADE: Mutex<Option<HashMap<String, Candidate>>> = Mutex::new(None);

fn recall(key: &str, store: Option<&Store>) -> Option<Candidate> {
    let made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = made.as_ref().and_then(|m| m.get(key)) {
        return Some(*c);
    }
    store?
        .read()
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, c)| c)
}

fn remember(key: &str, c: Candidate, store: Option<&Store>) {
    MADE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key.to_owned(), c);
    if let Some(s) = store {
        let _ = s.write(key, c);
    }
}

/// `fp32, channels-last (timed at start on batches of 8: fp32 channels-last 412 ms, fp32
/// contiguous 455 ms)`: the start line's account of the choice.
pub fn describe(c: Candidate, decided: &Decided) -> String {
    let named = |(p, m): Candidate| format!("{} {}", p.name(), m.name());
    let how = match decided {
        Decided::Given => String::new(),
        Decided::Measured { batch, ms } => format!(
            " (the faster, timed now on a batch of {batch}: {})",
            ms.iter()
                .map(|(c, t)| format!("{} {t:.0} ms", named(*c)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decided::Remembered(file) if file.as_os_str().is_empty() => {
            " (the faster, as timed earlier in this process)".to_owned()
        }
        Decided::Remembered(file) => {
            format!(" (the faster, as timed before: {})", file.display())
        }
    };
    format!("{}{how}", named(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_is_kept_and_a_tie_keeps_the_first() {
        let (a, b) = (
            (Precision::Fp32, Memory::ChannelsLast),
            (Precision::Fp32, Memory::Contiguous),
        );
        assert_eq!(fastest(&[(a, 10.0), (b, 9.0)]), Some(b));
        assert_eq!(fastest(&[(a, 9.0), (b, 9.0)]), Some(a));
        assert_eq!(fastest(&[]), None);
    }

    #[test]
    fn choices_are_remembered_in_the_file_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            file: dir.path().join("sub").join("tuned"),
        };
        let c = (Precision::Fp32, Memory::Contiguous);
        store.write("k1", c).unwrap();
        store
            .write("k2", (Precision::Bf16, Memory::ChannelsLast))
            .unwrap();
        store
            .write("k1", (Precision::Fp32, Memory::ChannelsLast))
            .unwrap();
        let all = store.read();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(
            recall("k1", Some(&store)),
            Some((Precision::Fp32, Memory::ChannelsLast))
        );
        assert_eq!(recall("nope", Some(&store)), None);
        std::fs::write(&store.file, "garbage\nk3 fp32 sideways\n").unwrap();
        assert!(store.read().is_empty(), "unreadable lines are ignored");
    }

    #[test]
    fn the_account_names_the_choice_and_how_it_was_made() {
        let c = (Precision::Fp32, Memory::Contiguous);
        assert_eq!(describe(c, &Decided::Given), "fp32 contiguous");
        let timed = Decided::Measured {
            batch: 8,
            ms: vec![((Precision::Fp32, Memory::ChannelsLast), 412.4), (c, 380.0)],
        };
        assert_eq!(
            describe(c, &timed),
            "fp32 contiguous (the faster, timed now on a batch of 8: fp32 channels-last 412 ms, fp32 contiguous 380 ms)"
        );
    }
}
