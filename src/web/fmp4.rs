//! Fragmented MP4 for Media Source Extensions: an init segment (`ftyp` + `moov`) from a stream's
//! SPS and PPS, then one fragment (`moof` + `mdat`) per encoded frame. One frame a fragment is
//! what keeps a browser's latency at the encoder's: nothing waits for a second frame. Pure
//! bytes in, bytes out; the H.264 comes as the encoder gives it (Annex-B, one access unit).
//!
//! Layout (ISO/IEC 14496-12 and -15):
//! ```text
//! init:      ftyp  moov{ mvhd  trak{ tkhd  mdia{ mdhd hdlr minf{ vmhd dinf{dref} stbl{
//!                  stsd{avc1{avcC}} stts stsc stsz stco } } } }  mvex{trex} }
//! fragment:  moof{ mfhd  traf{ tfhd tfdt trun } }  mdat
//! ```

/// Decode times in the files are in 90 kHz ticks, as in RTP.
pub const TIMESCALE: u64 = 90_000;

/// NAL unit types that matter here.
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;

/// The NAL units of an Annex-B access unit (start codes of 3 or 4 bytes), without start codes.
pub fn nal_units(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start of the start code, start of the payload)
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            let code = if i > 0 && au[i - 1] == 0 { i - 1 } else { i };
            starts.push((code, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &(_, payload)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(au.len(), |&(code, _)| code);
        if payload < end {
            units.push(&au[payload..end]);
        }
    }
    units
}

/// The parameter sets that describe a stream, as its key frames carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl Params {
    /// The SPS and PPS of an access unit, when it holds both (x264 repeats them on key frames).
    pub fn of(au: &[u8], width: u32, height: u32) -> Option<Params> {
        let units = nal_units(au);
        let find = |t: u8| units.iter().find(|u| u[0] & 0x1f == t).map(|u| u.to_vec());
        let sps = find(SPS).filter(|s| s.len() >= 4)?;
        Some(Params {
            sps,
            pps: find(PPS)?,
            width,
            height,
        })
    }

    /// The codec string a `SourceBuffer` is opened with: `avc1.PPCCLL`.
    pub fn codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.sps[1], self.sps[2], self.sps[3]
        )
    }

    /// `ftyp` + `moov` for one H.264 track.
    pub fn init_segment(&self) -> Vec<u8> {
        let mut out = Vec::new();
        bx(&mut out, b"ftyp", |b| {
            b.extend_from_slice(b"iso5");
            b.extend_from_slice(&512u32.to_be_bytes());
            for brand in [b"iso5", b"iso6", b"avc1", b"mp41"] {
                b.extend_from_slice(brand);
            }
        });
        bx(&mut out, b"moov", |b| {
            full(b, b"mvhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]); // created, modified
                b.extend_from_slice(&1000u32.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes()); // duration: unknown (live)
                b.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
                b.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
                b.extend_from_slice(&[0; 10]);
                matrix(b);
                b.extend_from_slice(&[0; 24]);
                b.extend_from_slice(&2u32.to_be_bytes()); // next track id
            });
            bx(b, b"trak", |b| self.trak(b));
            bx(b, b"mvex", |b| {
                full(b, b"trex", 0, 0, |b| {
                    for v in [1u32, 1, 0, 0, 0] {
                        b.extend_from_slice(&v.to_be_bytes());
                    }
                });
            });
        });
        out
    }

    fn trak(&self, b: &mut Vec<u8>) {
        full(b, b"tkhd", 0, 3, |b| {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&1u32.to_be_bytes()); // track id
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&0u32.to_be_bytes()); // duration
            b.extend_from_slice(&[0; 16]); // reserved, layer, group, volume, reserved
            matrix(b);
            b.extend_from_slice(&(self.width << 16).to_be_bytes());
            b.extend_from_slice(&(self.height << 16).to_be_bytes());
        });
        bx(b, b"mdia", |b| {
            full(b, b"mdhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]);
                b.extend_from_slice(&(TIMESCALE as u32).to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
                b.extend_from_slice(&[0; 2]);
            });
            full(b, b"hdlr", 0, 0, |b| {
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(b"vide");
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(b"gradcam\0");
            });
            bx(b, b"minf", |b| {
                full(b, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                bx(b, b"dinf", |b| {
                    full(b, b"dref", 0, 0, |b| {
                        b.extend_from_slice(&1u32.to_be_bytes());
                        full(b, b"url ", 0, 1, |_| {});
                    });
                });
                bx(b, b"stbl", |b| self.stbl(b));
            });
        });
    }

    fn stbl(&self, b: &mut Vec<u8>) {
        full(b, b"stsd", 0, 0, |b| {
            b.extend_from_slice(&1u32.to_be_bytes());
            bx(b, b"avc1", |b| {
                b.extend_from_slice(&[0; 6]);
                b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
                b.extend_from_slice(&[0; 16]);
                b.extend_from_slice(&(self.width as u16).to_be_bytes());
                b.extend_from_slice(&(self.height as u16).to_be_bytes());
                b.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
                b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&1u16.to_be_bytes()); // frames per sample
                b.extend_from_slice(&[0; 32]); // compressor name
                b.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
                b.extend_from_slice(&0xffffu16.to_be_bytes()); // pre-defined -1
                bx(b, b"avcC", |b| {
                    b.extend_from_slice(&[1, self.sps[1], self.sps[2], self.sps[3]]);
                    b.push(0xff); // 4-byte NAL lengths
                    b.push(0xe1); // one SPS
                    b.extend_from_slice(&(self.sps.len() as u16).to_be_bytes());
                    b.extend_from_slice(&self.sps);
                    b.push(1); // one PPS
                    b.extend_from_slice(&(self.pps.len() as u16).to_be_bytes());
                    b.extend_from_slice(&self.pps);
                });
            });
        });
        for name in [b"stts", b"stsc", b"stco"] {
            full(b, name, 0, 0, |b| b.extend_from_slice(&0u32.to_be_bytes()));
        }
        full(b, b"stsz", 0, 0, |b| b.extend_from_slice(&[0; 8]));
    }
}

/// One frame as a `moof` + `mdat`: decode time and duration in [`TIMESCALE`] ticks. The
/// parameter sets and delimiters stay out of the samples (they are in the init segment).
pub fn fragment(sequence: u32, decode_time: u64, duration: u32, key: bool, au: &[u8]) -> Vec<u8> {
    let mut sample = Vec::with_capacity(au.len() + 16);
    for unit in nal_units(au) {
        if matches!(unit[0] & 0x1f, SPS | PPS | AUD) {
            continue;
        }
        sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
        sample.extend_from_slice(unit);
    }
    // Sync sample: depends on nothing; otherwise depends on others and is not a sync sample.
    let flags: u32 = if key { 0x0200_0000 } else { 0x0101_0000 };
    let mut out = Vec::with_capacity(sample.len() + 120);
    bx(&mut out, b"moof", |b| {
        full(b, b"mfhd", 0, 0, |b| {
            b.extend_from_slice(&sequence.to_be_bytes())
        });
        bx(b, b"traf", |b| {
            full(b, b"tfhd", 0, 0x02_0000, |b| {
                b.extend_from_slice(&1u32.to_be_bytes())
            });
            full(b, b"tfdt", 1, 0, |b| {
                b.extend_from_slice(&decode_time.to_be_bytes())
            });
            // data offset, sample duration, size and flags present
            full(b, b"trun", 0, 0x0701, |b| {
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&duration.to_be_bytes());
                b.extend_from_slice(&(sample.len() as u32).to_be_bytes());
                b.extend_from_slice(&flags.to_be_bytes());
            });
        });
    });
    // The sample starts after the moof and the mdat's header.
    let data_offset = (out.len() + 8) as u32;
    let pos = find_trun_offset(&out).expect("the moof just written has a trun");
    out[pos..pos + 4].copy_from_slice(&data_offset.to_be_bytes());
    out.extend_from_slice(&((sample.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&sample);
    out
}

/// Where trun's data-offset field lies in a moof written by [`fragment`].
fn find_trun_offset(moof: &[u8]) -> Option<usize> {
    let at = moof.windows(4).position(|w| w == b"trun")?;
    // type, version+flags, sample count, then the offset
    Some(at + 4 + 4 + 4)
}

/// A box: size, type, then what `body` writes.
fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version byte and 24 bits of flags.
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    bx(out, kind, |b| {
        b.push(version);
        b.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(b);
    });
}

/// The identity transformation matrix of mvhd and tkhd.
fn matrix(b: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_split_on_both_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 1, 0x68, 9, 0, 0, 0, 1, 0x65, 7,
        ];
        let units = nal_units(&au);
        assert_eq!(units, vec![&[0x67, 1, 2, 3][..], &[0x68, 9], &[0x65, 7]]);
        let p = Params::of(&au, 64, 48).expect("sps and pps");
        assert_eq!(p.codec(), "avc1.010203");
    }

    #[test]
    fn a_fragment_points_at_its_sample() {
        let au = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 1, 2, 3, 4];
        let f = fragment(7, 90_000, 3600, true, &au);
        let moof = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        assert_eq!(&f[4..8], b"moof");
        assert_eq!(&f[moof + 4..moof + 8], b"mdat");
        // The sample: a 4-byte length then the slice, the delimiter left out.
        assert_eq!(&f[moof + 8..], &[0, 0, 0, 5, 0x65, 1, 2, 3, 4]);
        let pos = find_trun_offset(&f).unwrap();
        let offset = u32::from_be_bytes(f[pos..pos + 4].try_into().unwrap()) as usize;
        assert_eq!(offset, moof + 8, "data offset is from the moof's start");
    }
}
