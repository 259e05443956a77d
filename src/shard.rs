//! `--shard INDEX/COUNT`: one process's share of the configured streams, so that COUNT
//! processes (a StatefulSet's pods, or processes beside each other) split a site's cameras
//! with no list kept anywhere but the one config. Each stream goes to the shard whose weight
//! for its name is highest (rendezvous, or highest-random-weight, hashing): every stream
//! belongs to exactly one shard, and going from N to N+1 shards moves only the streams the new
//! shard wins, about 1/(N+1) of them, each to the new shard. `--shard auto` reads INDEX from
//! the host name's trailing `-N` (a StatefulSet pod's ordinal) and COUNT from
//! `GRADCAM_SHARDS`.

use std::fmt;

/// A process's place among the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The largest shard count taken (far more processes than any site has cameras).
const MOST: u32 = 10_000;

impl Shard {
    /// `INDEX/COUNT` or `auto` (its values from `host` and `shards`: the host name and
    /// `GRADCAM_SHARDS`), or the one-line usage error. An `auto` pod whose ordinal is past
    /// the count (scaled up before the count was raised) is kept: it holds no streams.
    pub fn parse(v: &str, host: Option<&str>, shards: Option<&str>) -> Result<Shard, String> {
        if v == "auto" {
            let host = host.unwrap_or("");
            let index = host
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    format!(
                        "--shard auto: the host name `{host}` does not end in -N (a StatefulSet \
                         pod's ordinal); give --shard INDEX/COUNT"
                    )
                })?;
            let count = shards
                .ok_or(
                    "--shard auto: GRADCAM_SHARDS is not set; set it to the StatefulSet's replicas",
                )?
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|c| (1..=MOST).contains(c))
                .ok_or_else(|| {
                    format!(
                        "--shard auto: GRADCAM_SHARDS={} is not a count of 1 to {MOST}",
                        shards.unwrap_or_default()
                    )
                })?;
            return Ok(Shard { index, count });
        }
        let bad = || format!("--shard {v}: use INDEX/COUNT (0/3, 1/3, 2/3) or auto");
        let (i, c) = v.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            c.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || count > MOST {
            return Err(format!("--shard {v}: COUNT must be 1 to {MOST}"));
        }
        if index >= count {
            return Err(format!(
                "--shard {v}: INDEX must be below COUNT (0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the stream named `name` is this shard's.
    pub fn owns(&self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

/// The shard of `count` that the stream `name` belongs to: the one of highest weight.
pub fn owner(name: &str, count: u32) -> u32 {
    (0..count.max(1))
        .max_by_key(|&s| (weight(name, s), s))
        .unwrap_or(0)
}

/// A stream's weight for a shard: FNV-1a over the name and the shard number, through
/// SplitMix64's finalizer so that neighbouring inputs give unrelated weights. Fixed forever:
/// every process, on every machine and release, must agree.
fn weight(name: &str, shard: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0]).chain(shard.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cam{i:03}")).collect()
    }

    #[test]
    fn every_stream_has_exactly_one_shard_and_the_shards_are_even() {
        let all = names(1200);
        for count in [1, 2, 3, 4, 7] {
            let mut held = vec![0usize; count as usize];
            for n in &all {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard { index: i, count }.owns(n))
                    .collect();
                assert_eq!(owners.len(), 1, "{n} with {count} shards: {owners:?}");
                held[owners[0] as usize] += 1;
            }
            let fair = all.len() / count as usize;
            for h in &held {
                assert!(h.abs_diff(fair) < fair / 5 + 10, "{count} shards: {held:?}");
            }
        }
    }

    #[test]
    fn one_more_shard_moves_only_its_share_and_only_to_itself() {
        let all = names(1200);
        for count in [1u32, 2, 3, 5, 8] {
            let moved: Vec<&String> = all
                .iter()
                .filter(|n| owner(n, count) != owner(n, count + 1))
                .collect();
            // Each moved stream went to the new shard.
            assert!(moved.iter().all(|n| owner(n, count + 1) == count));
            let share = moved.len() as f64 / all.len() as f64;
            let expected = 1.0 / (count + 1) as f64;
            assert!(
                (share - expected).abs() < 0.05,
                "{count} to {}: {share:.3} moved, about {expected:.3} expected",
                count + 1
            );
        }
    }

    #[test]
    fn the_assignment_is_fixed() {
        // Processes of any release must agree: these are what the weights give today.
        let got: Vec<u32> = ["door", "yard", "gate", "dock"]
            .iter()
            .map(|n| owner(n, 3))
            .collect();
        assert_eq!(got, FIXED);
    }
    const FIXED: [u32; 4] = [2, 1, 1, 2];

    #[test]
    fn values_are_read_or_refused_in_one_line() {
        let p = |v, h, s| Shard::parse(v, h, s);
        assert_eq!(p("1/3", None, None), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(
            p("auto", Some("gradcam-stream-2"), Some("4")),
            Ok(Shard { index: 2, count: 4 })
        );
        // Scaled up before the count: held, with nothing to explain.
        let past = p("auto", Some("gradcam-stream-5"), Some("4")).unwrap();
        assert!(names(50).iter().all(|n| !past.owns(n)));
        for (v, h, s, says) in [
            ("3/3", None, None, "INDEX must be below COUNT (0 to 2)"),
            ("1/0", None, None, "COUNT must be 1 to"),
            ("two", None, None, "use INDEX/COUNT"),
            ("auto", Some("laptop"), Some("3"), "does not end in -N"),
            ("auto", Some("gradcam-1"), None, "GRADCAM_SHARDS is not set"),
            ("auto", Some("gradcam-1"), Some("x"), "GRADCAM_SHARDS=x"),
        ] {
            let e = p(v, h, s).unwrap_err();
            assert!(e.contains(says) && !e.contains('\n'), "{v}: {e}");
        }
    }
}
