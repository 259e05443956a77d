//! A still image as a person sees it: its EXIF orientation applied (a phone photo stored
//! sideways is explained upright), transparency composited over black, any bit depth and
//! colour model (16-bit, greyscale, CMYK JPEG) brought to 8-bit RGB. Pure; never panics on a
//! bad file: each failure is one line naming the file and the reason.

use std::path::Path;

use anyhow::{anyhow, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// The picture in `path` as 8-bit RGB, upright when `upright` (EXIF orientation), and what
/// was done to it (for the log): e.g. `["turned upright (EXIF orientation 6)"]`.
pub fn read(path: &Path, upright: bool) -> Result<(RgbImage, Vec<String>)> {
    let bad = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot read image {}: {e}; give a PNG, JPEG, BMP, WebP or TIFF file",
            path.display()
        )
    };
    let reader = ImageReader::open(path)
        .map_err(|e| bad(&e))?
        .with_guessed_format()
        .map_err(|e| bad(&e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        // The JPEG decoder fills a cut-off picture with grey and says nothing.
        let bytes = std::fs::read(path).map_err(|e| bad(&e))?;
        if !jpeg_is_whole(&bytes) {
            return Err(bad(
                &"the JPEG is cut off (it ends before its picture does; copy or \
                             export it again)",
            ));
        }
    }
    let mut decoder = reader.into_decoder().map_err(|e| bad(&e))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?;
    let mut notes = Vec::new();
    if let (true, Some(o)) = (upright, orientation) {
        if o != image::metadata::Orientation::NoTransforms {
            img.apply_orientation(o);
            notes.push(format!("turned upright (EXIF orientation {})", o.to_exif()));
        }
    }
    if img.color().has_alpha() {
        notes.push("transparency composited over black".into());
        return Ok((over_black(&img), notes));
    }
    Ok((img.to_rgb8(), notes))
}

/// Whether a JPEG holds its end-of-image marker after its picture's data: walk the marker
/// segments (skipping their contents, where an EXIF thumbnail has markers of its own) to the
/// first scan, then look for the end marker (a 0xFF in coded data is always followed by 0).
fn jpeg_is_whole(b: &[u8]) -> bool {
    let mut at = 2; // past SOI
    while at + 4 <= b.len() && b[at] == 0xFF {
        let marker = b[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if marker == 0xDA {
            return b[at..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        at += 2 + u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
    }
    false
}

/// Each pixel's colour times its opacity: what the picture looks like on black.
fn over_black(img: &DynamicImage) -> RgbImage {
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            o[c] = ((p[c] as u32 * a + 127) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparency_is_composited_over_black() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.png");
        let mut img = image::RgbaImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgba([200, 100, 50, 255]));
        img.put_pixel(1, 0, image::Rgba([200, 100, 50, 0]));
        img.save(&path)?;
        let (rgb, notes) = read(&path, true)?;
        assert_eq!(rgb.get_pixel(0, 0).0, [200, 100, 50]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 0, 0]);
        assert_eq!(notes, vec!["transparency composited over black"]);
        Ok(())
    }

    #[test]
    fn sixteen_bit_grey_becomes_eight_bit_rgb() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("g.png");
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(3, 2, image::Luma([65535]));
        img.save(&path)?;
        let (rgb, _) = read(&path, true)?;
        assert_eq!((rgb.width(), rgb.height()), (3, 2));
        assert_eq!(rgb.get_pixel(2, 1).0, [255, 255, 255]);
        Ok(())
    }

    #[test]
    fn a_cut_off_jpeg_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.jpg");
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        img.save(&path)?;
        let whole = std::fs::read(&path)?;
        assert!(jpeg_is_whole(&whole));
        read(&path, true)?;
        std::fs::write(&path, &whole[..whole.len() * 2 / 3])?;
        let e = read(&path, true).unwrap_err().to_string();
        assert!(e.contains("p.jpg") && e.contains("cut off"), "{e}");
        assert_eq!(e.lines().count(), 1);
        Ok(())
    }

    #[test]
    fn a_file_that_is_no_image_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        std::fs::write(&path, b"not a png at all").unwrap();
        let e = read(&path, true).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read image ") && e.contains("x.png"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }
}
