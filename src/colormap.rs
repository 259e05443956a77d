//! Heatmap colours: JET (the default, as pytorch-grad-cam's `show_cam_on_image` uses), and the
//! perceptually uniform turbo, inferno and viridis, each as a 256-entry table indexed by
//! `round(v * 255)`. Turbo, inferno and viridis are interpolated linearly through their
//! published colour stops (matplotlib's and Google's), which keeps them within a few levels of
//! the originals.

use crate::overlay::jet;

pub use crate::settings::named::Colormap;
#[cfg(test)]
use crate::settings::named::Named;

const TURBO: &[u32] = &[
    0x30123b, 0x4145ab, 0x4675ed, 0x39a2fc, 0x1bcfd4, 0x24eca6, 0x61fc6c, 0xa4fc3b, 0xd1e834,
    0xf3c63a, 0xfe9b2d, 0xf36315, 0xd93806, 0xb11901, 0x7a0403,
];
const INFERNO: &[u32] = &[
    0x000004, 0x1b0c41, 0x4a0c6b, 0x781c6d, 0xa52c60, 0xcf4446, 0xed6925, 0xfb9b06, 0xf7d13d,
    0xfcffa4,
];
const VIRIDIS: &[u32] = &[
    0x440154, 0x482878, 0x3e4989, 0x31688e, 0x26828e, 0x1f9e89, 0x35b779, 0x6ece58, 0xb5de2b,
    0xfde725,
];

impl Colormap {
    /// The 256-entry table.
    pub fn lut(self) -> [[u8; 3]; 256] {
        let mut lut = [[0u8; 3]; 256];
        for (i, c) in lut.iter_mut().enumerate() {
            let v = i as f32 / 255.0;
            *c = match self {
                Colormap::Jet => jet(v),
                Colormap::Turbo => through(TURBO, v),
                Colormap::Inferno => through(INFERNO, v),
                Colormap::Viridis => through(VIRIDIS, v),
            };
        }
        lut
    }
}

/// Linear interpolation through evenly spaced `stops` (0xRRGGBB) at `v` in [0, 1].
fn through(stops: &[u32], v: f32) -> [u8; 3] {
    let rgb = |c: u32| {
        [
            (c >> 16) as f32,
            ((c >> 8) & 0xff) as f32,
            (c & 0xff) as f32,
        ]
    };
    let x = v.clamp(0.0, 1.0) * (stops.len() - 1) as f32;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f32;
    let (a, b) = (rgb(stops[i]), rgb(stops[i + 1]));
    [0, 1, 2].map(|k| (a[k] + (b[k] - a[k]) * f).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_the_published_colours() {
        assert_eq!(Colormap::Viridis.lut()[0], [0x44, 0x01, 0x54]);
        assert_eq!(Colormap::Viridis.lut()[255], [0xfd, 0xe7, 0x25]);
        assert_eq!(Colormap::Inferno.lut()[0], [0, 0, 4]);
        assert_eq!(Colormap::Inferno.lut()[255], [0xfc, 0xff, 0xa4]);
        assert_eq!(Colormap::Turbo.lut()[255], [0x7a, 0x04, 0x03]);
        assert_eq!(Colormap::Jet.lut()[255], jet(1.0));
        assert_eq!("Turbo".parse(), Ok(Colormap::Turbo));
        assert!("hot".parse::<Colormap>().is_err());
    }

    #[test]
    fn inferno_and_viridis_brighten_monotonically() {
        for c in [Colormap::Inferno, Colormap::Viridis] {
            let lum: Vec<u32> = c
                .lut()
                .iter()
                .map(|p| 299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32)
                .collect();
            assert!(lum.windows(2).all(|w| w[0] <= w[1] + 600), "{}", c.name());
            assert!(lum[255] > lum[0] + 100_000, "{}", c.name());
        }
    }
}
