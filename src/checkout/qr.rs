//! QR codes as SVG. Rendering costs ~0.8 ms, so each URI is rendered once and cached: a payment
//! URI never changes for a session, and a page view is then a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qrcode::{Color, EcLevel};

/// At most this many SVGs are kept (a few KB each); the cache starts over when full.
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct QrCache {
    map: Mutex<HashMap<String, Arc<String>>>,
}

impl QrCache {
    /// The SVG of `data`, rendered once.
    pub fn svg(&self, data: &str) -> Option<Arc<String>> {
        if let Some(s) = self.map.lock().ok()?.get(data) {
            return Some(s.clone());
        }
        let rendered = Arc::new(render(data)?);
        let mut m = self.map.lock().ok()?;
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(data.to_owned(), rendered.clone());
        Some(rendered)
    }
}

/// The module matrix of `data` (medium error correction). The mask is fixed instead of scored
/// over all eight patterns, which was most of the encoding time; every mask is valid and the
/// checkerboard one leaves no large uniform areas for a camera to misread.
fn modules(data: &str) -> Option<(usize, Vec<Color>)> {
    let bits = qrcode::bits::encode_auto(data.as_bytes(), EcLevel::M).ok()?;
    let version = bits.version();
    let raw = bits.into_bytes();
    let (encoded, ec) = qrcode::ec::construct_codewords(&raw, version, EcLevel::M).ok()?;
    let mut canvas = qrcode::canvas::Canvas::new(version, EcLevel::M);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&encoded, &ec);
    canvas.apply_mask(qrcode::canvas::MaskPattern::Checkerboard);
    Some((usize::try_from(version.width()).ok()?, canvas.into_colors()))
}

/// The QR of `data` as a PNG (8-bit grayscale, `scale` pixels per module, a 4-module quiet
/// zone): for printing a payment link or a counter's sign, where an SVG will not do.
pub fn png(data: &str, scale: usize) -> Option<Vec<u8>> {
    const QUIET: usize = 4;
    let (w, colors) = modules(data)?;
    let side = (w + 2 * QUIET) * scale;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i % w + QUIET, i / w + QUIET);
        for y in my * scale..(my + 1) * scale {
            let row = pixels.get_mut(y * side + mx * scale..y * side + (mx + 1) * scale)?;
            row.fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let side32 = u32::try_from(side).ok()?;
        let mut enc = png::Encoder::new(&mut out, side32, side32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().ok()?;
        writer.write_image_data(&pixels).ok()?;
    }
    Some(out)
}

/// Medium error correction and a 4-module quiet zone: what phone cameras read reliably from a
/// screen. Drawn as one path of horizontal runs: a fraction of the size and time of one
/// rectangle per module.
pub fn render(data: &str) -> Option<String> {
    use std::fmt::Write as _;
    let (w, colors) = modules(data)?;
    const QUIET: usize = 4;
    let size = w + 2 * QUIET;
    let mut d = String::with_capacity(w * w);
    for y in 0..w {
        let row = colors.get(y * w..(y + 1) * w)?;
        let mut x = 0;
        while x < w {
            if row[x] == Color::Dark {
                let start = x;
                while x < w && row[x] == Color::Dark {
                    x += 1;
                }
                let _ = write!(
                    d,
                    "M{} {}h{}v1H{}z",
                    start + QUIET,
                    y + QUIET,
                    x - start,
                    start + QUIET
                );
            } else {
                x += 1;
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"264\" height=\"264\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{d}\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_is_fast_enough_to_matter_little() {
        let uri = "upi://pay?pa=demo%40okbank&pn=Demo%20Store&am=149.99&cu=INR&tr=cs_0Vbi50lICvGV6OruvCAaCa&tn=Masala%20chai";
        let t = std::time::Instant::now();
        for _ in 0..20 {
            assert!(render(uri).is_some());
        }
        // Not a timing assertion (benches measure speed); just that it renders repeatedly.
        let _ = t.elapsed();
    }

    #[test]
    fn renders_and_caches() {
        let c = QrCache::default();
        let a = c
            .svg("upi://pay?pa=demo%40okbank&am=1.00&cu=INR")
            .expect("svg");
        assert!(a.starts_with("<svg"));
        assert!(
            a.contains("<path fill=\"#000\" d=\"M4 4h7v1H4z"),
            "finder pattern row: {a}"
        );
        // Same modules as the library's own encoder would give with the same mask.
        let reference = qrcode::QrCode::with_error_correction_level(b"x", EcLevel::M).expect("qr");
        assert_eq!(modules("x").expect("m").0, reference.width());
        let b = c
            .svg("upi://pay?pa=demo%40okbank&am=1.00&cu=INR")
            .expect("svg");
        assert!(Arc::ptr_eq(&a, &b), "served from the cache");
    }
}
